"""Agreement between two raters on the same items: percent agreement and Cohen's kappa, with n.

Used where a human and an LLM judge labelled the same span (is the judge one people would agree with? the seeds'
"feedback collapse" made measurable). Pure: exact rational arithmetic, rounded only at the end.

Cohen's kappa: kappa = (p_o - p_e) / (1 - p_e), with p_o the share of items both raters gave the same category
and p_e the agreement expected by chance from each rater's own category frequencies. It is undefined (None) when
there are no items or when chance agreement is already certain (both raters used one and the same category for
every item): the percent agreement still says 100% there.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any


@dataclass(frozen=True)
class Agreement:
    """`n` items rated by both; `agree` of them alike; `percent` = agree / n (0..1); `kappa` Cohen's kappa;
    `categories` every category either rater used, sorted by text."""

    n: int
    agree: int
    percent: float | None
    kappa: float | None
    categories: tuple[str, ...]


def agreement(pairs: Sequence[tuple[Hashable, Hashable]], digits: int = 6) -> Agreement:
    """Agreement of rater A (first of each pair) with rater B (second) over the same items."""
    n = len(pairs)
    categories = tuple(sorted({str(c) for pair in pairs for c in pair}))
    if n == 0:
        return Agreement(0, 0, None, None, categories)
    agree = sum(1 for a, b in pairs if a == b)
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    observed = Fraction(agree, n)
    chance = sum((Fraction(first[c], n) * Fraction(second[c], n) for c in first), Fraction(0))
    kappa = None if chance == 1 else (observed - chance) / (1 - chance)
    return Agreement(n, agree, round(float(observed), digits),
                     None if kappa is None else round(float(kappa), digits), categories)


def paired_ratings(results: Mapping[str, Mapping[str, Any]], first: str, second: str) -> list[tuple[str, str]]:
    """(first's category, second's category) on every item both rated, in item-id order. `results` maps an item
    id to eval name -> a verdict with `label` and `score` (an EvalResult). The pair compares labels when both
    verdicts have one, else scores (as text, `1` == `1.0`); a verdict with neither is not a rating."""
    pairs = []
    for item in sorted(results):
        a, b = results[item].get(first), results[item].get(second)
        if a is None or b is None:
            continue
        if a.label is not None and b.label is not None:
            pairs.append((str(a.label), str(b.label)))
        elif a.score is not None and b.score is not None:
            pairs.append((f"{float(a.score):g}", f"{float(b.score):g}"))
    return pairs
