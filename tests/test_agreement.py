"""Judge-human agreement: exact on hand-made cases (core/agreement.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from selfimprove.core.agreement import agreement, paired_ratings


def test_the_textbook_case_is_exact():
    # 50 items: both yes 20, A yes / B no 5, A no / B yes 10, both no 15.
    # p_o = 35/50 = 0.7; A says yes 25/50, B 30/50: p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.2/0.5 = 0.4
    pairs = [("yes", "yes")] * 20 + [("yes", "no")] * 5 + [("no", "yes")] * 10 + [("no", "no")] * 15
    result = agreement(pairs)
    assert (result.n, result.agree, result.percent, result.kappa) == (50, 35, 0.7, 0.4)
    assert result.categories == ("no", "yes")


def test_three_categories_by_hand():
    # 10 items over a, b, c. Diagonal: a 3, b 2, c 1 -> p_o = 6/10.
    # A's totals: a 4, b 3, c 3; B's totals: a 5, b 4, c 1.
    # p_e = (4*5 + 3*4 + 3*1) / 100 = 35/100; kappa = (0.60 - 0.35) / 0.65 = 5/13 = 0.384615...
    pairs = [("a", "a")] * 3 + [("a", "b")] + [("b", "b")] * 2 + [("b", "a")] + [("c", "c"), ("c", "b"), ("c", "a")]
    result = agreement(pairs)
    assert (result.n, result.agree, result.percent) == (10, 6, 0.6)
    assert result.kappa == round(5 / 13, 6) == 0.384615


def test_perfect_and_chance_and_opposite():
    assert agreement([("a", "a"), ("b", "b")]).kappa == 1.0
    assert agreement([("a", "b"), ("b", "a")]).kappa == -1.0
    # A always 'a', B half 'a': p_o = 0.5, p_e = 1 * 0.5 = 0.5 -> kappa 0
    assert agreement([("a", "a"), ("a", "b")]).kappa == 0.0


def test_undefined_kappa_is_none_not_a_number():
    empty = agreement([])
    assert (empty.n, empty.percent, empty.kappa) == (0, None, None)
    same = agreement([("ok", "ok")] * 4)  # chance agreement is certain
    assert (same.percent, same.kappa) == (1.0, None)


@given(st.lists(st.tuples(st.sampled_from("abc"), st.sampled_from("abc")), min_size=1, max_size=40))
def test_bounds_and_symmetry(pairs):
    result = agreement(pairs)
    swapped = agreement([(b, a) for a, b in pairs])
    assert 0 <= result.percent <= 1 and result.percent == swapped.percent
    assert result.kappa == swapped.kappa
    if result.kappa is not None:
        assert -1 <= result.kappa <= 1


def test_pairs_are_the_spans_both_rated_by_label_else_score():
    from selfimprove.core.records import EvalResult

    results = {
        "s1": {"human.correctness": EvalResult(label="correct"), "correctness": EvalResult(label="correct", score=1)},
        "s2": {"human.correctness": EvalResult(label="correct"), "correctness": EvalResult(label="incorrect")},
        "s3": {"human.correctness": EvalResult(score=1.0), "correctness": EvalResult(label="correct", score=1)},
        "s4": {"correctness": EvalResult(label="correct")},  # no human label: not a pair
        "s5": {"human.correctness": EvalResult(explanation="?"), "correctness": EvalResult(label="correct")},
    }
    assert paired_ratings(results, "human.correctness", "correctness") == [
        ("correct", "correct"), ("correct", "incorrect"), ("1", "1")]
