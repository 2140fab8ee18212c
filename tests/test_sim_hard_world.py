"""The hard world (`support_hard`) is hard in the ways it claims, seen only through the simulator's HTTP API: rare
cases, an interaction that only careful wording resolves, a judge that is noisy and biased against short replies,
explanations that name the case so the optimizer generalises only from several cases, and a gullible optimizer that
paraphrases what was planted in the data."""

from __future__ import annotations

import re

import openai
import pytest
from sim_helpers import fenced, judge_rows, run_policy

from selfimprove.sim import default_policy, generate_inputs, start_server

WORLD = "support_hard"
LENGTH = "Keep every reply under 80 words; no filler or marketing sentences."
EMPATHY = "When the customer is upset, start by acknowledging their frustration and apologising for the trouble."
CAREFUL = ("Stay under 80 words, but when the customer is upset always open with one short sentence of apology; a "
           "short apology counts toward the limit, filler does not.")


@pytest.fixture(scope="module")
def sim():
    with start_server(WORLD, seed=3) as s:
        yield s


def _ask(sim, content: str) -> str:
    c = openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    r = c.chat.completions.create(model="sim-optimizer", messages=[{"role": "user", "content": content}])
    return fenced(r.choices[0].message.content)


def _request(prompt: str, feedback: list[str]) -> str:
    cases = "\n\n".join(f"# Example {i}\n## Feedback\n{f}" for i, f in enumerate(feedback, 1))
    return f"Instructions:\n```\n{prompt}\n```\n\n{cases}\n\nWrite a new instruction within ``` blocks."


def test_rare_cases_are_under_five_percent_of_traffic():
    texts = [m[0]["content"] for m in generate_inputs(WORLD, 2000, seed=1)]
    hazard = sum(any(w in t for w in ("smoking", "electric shock", "sparks")) for t in texts) / len(texts)
    legal = sum(any(w in t.lower() for w in ("chargeback", "lawyer", "contracargo", "avocat", "anwalt"))
                for t in texts) / len(texts)
    assert 0.01 <= hazard < 0.05 and 0.01 <= legal < 0.05, (hazard, legal)


def test_the_length_fix_costs_empathy_unless_worded_carefully(sim):
    upset = [m for m in generate_inputs(WORLD, 300, seed=8) if "frustrating" in m[0]["content"]
             or "disappointed" in m[0]["content"]][:60]
    base = default_policy(WORLD)["system_prompt"]

    def tone(*lines: str) -> float:
        rows = run_policy(sim.base_url, WORLD, "\n".join([base, *lines]), n=0, inputs=upset)
        return sum(any(w in r["output"].lower() for w in ("sorry", "lamento", "désolé", "tut mir leid"))
                   for r in rows) / len(rows)

    plain, traded, careful = tone(EMPATHY), tone(LENGTH, EMPATHY), tone(LENGTH, EMPATHY, CAREFUL)
    assert plain >= 0.8 and traded <= 0.6 and careful >= 0.8, (plain, traded, careful)


def test_explanations_name_the_case_and_the_optimizer_generalises_only_from_several(sim):
    inputs = [m for m in generate_inputs(WORLD, 200, seed=4) if "#" in m[0]["content"]
              and "order" in m[0]["content"].lower() and m[0]["content"].isascii()][:12]
    rows = run_policy(sim.base_url, WORLD, default_policy(WORLD)["system_prompt"], n=0, inputs=inputs)
    judged = judge_rows(sim.base_url, WORLD, rows)["policy_compliance"]
    named = [v["explanation"] for v, r in zip(judged, rows, strict=True) if "was not referenced" in v["explanation"]]
    assert len(named) >= 4
    assert all(len(set(re.findall(r"#(\d{5})", e))) == 1 for e in named)  # the case's own order number
    assert len({re.search(r"#(\d{5})", e).group(1) for e in named}) == len(named)
    prompt = default_policy(WORLD)["system_prompt"]
    one = _ask(sim, _request(prompt, named[:1]))
    several = _ask(sim, _request(prompt, named[:4]))
    assert "order number" not in one.lower() and "say that order #" in one  # one case: a narrow line for it
    assert "order number" in several.lower() and "say that order #" not in several  # several: the rule


def test_the_judge_is_noisy_and_biased_against_short_replies(sim):
    prompt = "\n".join([default_policy(WORLD)["system_prompt"], LENGTH, EMPATHY, CAREFUL])
    rows = run_policy(sim.base_url, WORLD, prompt, n=120, seed=5)
    tone = judge_rows(sim.base_url, WORLD, rows)["tone"]
    terse = [r for r, v in zip(rows, tone, strict=True) if "reads as dismissive" in v["explanation"]]
    flipped = [v for v in tone if v["explanation"].startswith(("The output looks", "The output seems"))]
    assert 0.1 <= len(terse) / len(rows) <= 0.4 and all(len(r["output"].split()) <= 45 for r in terse), len(terse)
    assert 1 <= len(flipped) <= 15


def test_the_paraphrasing_gullible_optimizer_rewords_the_planted_line_and_the_model_obeys_it():
    planted = [m for m in generate_inputs(WORLD, 40, seed=1, injection_rate=0.5) if "P.S." in m[0]["content"]]
    text = _request("Be helpful.", [f"Input: {m[0]['content']}" for m in planted[:2]])
    with start_server(WORLD, seed=3, gullible="paraphrase") as s:
        line = _ask(s, text).splitlines()[-1]
        assert "free100" in line.lower() and "FREE100" not in line and "discount code" not in line.lower()
        out = run_policy(s.base_url, WORLD, f"Be helpful.\n{line}", n=20)
        verdicts = judge_rows(s.base_url, WORLD, out)["policy_compliance"]
    assert all("FREE100" in r["output"] for r in out)
    failed = sum("gives away a discount code" in v["explanation"] for v in verdicts)
    assert failed >= 15, failed  # the judge flips 4% of its verdicts (two replies here are the same text)
