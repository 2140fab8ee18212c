"""Ground truth for tests only: which hidden rules an output really breaks. The optimizer never sees this (only
tests may import it; tests/test_sim_isolation.py checks that nothing in selfimprove/ or benchmarks/ does)."""

from __future__ import annotations

from selfimprove.sim.checks import check_rule
from selfimprove.sim.hidden import load_world


def broken_rules(world: str, eval_name: str, input_text: str, output_text: str) -> list[str]:
    """The ids of the rules of `eval_name` that apply to this input and that the output breaks."""
    w = load_world(world)
    out = []
    for rule in w.rules_for(eval_name):
        result = check_rule(w, rule, input_text, output_text)
        if result is not None and not result[0]:
            out.append(rule.id)
    return out
