"""The optimizer under test must never see the simulator's hidden rules: nothing outside selfimprove/sim/ imports
the modules that hold or apply them, and the public API returns none of them."""

from __future__ import annotations

import ast
import gc
from contextlib import contextmanager
from pathlib import Path

from selfimprove.sim import default_policy, world_evals, world_names
from selfimprove.sim.hidden import load_world

ROOT = Path(__file__).resolve().parents[1]
HIDDEN_MODULES = {"hidden", "checks", "judge", "task_model", "optimizer", "models"}
TEST_ONLY = "selfimprove.sim.truth"  # ground truth for tests (failure-mode purity): never for the product


def _imports(tree: ast.AST) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
    return out


@contextmanager
def gc_paused():
    """`ast.parse` with the garbage collector paused: on CPython 3.11.7 a finalizer that runs while the AST objects
    are built (an SDK client's __del__, say) trips "AST constructor recursion depth mismatch" (a SystemError). One
    collection first, then none while every file is parsed (a collection per file cost a minute on a big heap)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _outside_files():
    for base in ("selfimprove", "tests", "benchmarks"):
        for path in (ROOT / base).rglob("*.py"):
            rel = path.relative_to(ROOT).as_posix()
            if rel.startswith("selfimprove/sim/") or rel == "tests/test_sim_isolation.py":
                continue
            yield rel, path


def test_nothing_outside_the_simulator_imports_its_hidden_rules():
    offenders = []
    with gc_paused():
        parsed = [(rel, text, ast.parse(text)) for rel, path in _outside_files()
                  for text in [path.read_text("utf-8")]]
    for rel, text, tree in parsed:
        names = _imports(tree)
        bad = {n for n in names for m in HIDDEN_MODULES if n == f"selfimprove.sim.{m}" or n.startswith(f"selfimprove.sim.{m}.")}
        if not rel.startswith("tests/"):
            bad |= {n for n in names if n == TEST_ONLY or n.startswith(TEST_ONLY + ".")}
        if bad or "sim/worlds" in text or "sim.hidden" in text:
            offenders.append((rel, sorted(bad)))
    assert offenders == []


def test_public_api_reveals_no_rule():
    for world in world_names():
        public = repr(world_evals(world)) + repr(default_policy(world))
        prompt = default_policy(world)["system_prompt"].lower()
        for rule in load_world(world).rules:
            assert rule.data["fix"] not in public and rule.data["marker"] not in public
            assert rule.coverage(prompt) == 0.0, rule.id  # the weak default policy covers no rule


def test_every_fix_covers_its_rule_and_no_marker_is_in_a_fix():
    """The optimizer's instruction for a rule contains the rule's covering wording (so following the feedback works),
    and never the judge's wording (so a fixed prompt does not look like a failure to the optimizer)."""
    for world in world_names():
        w = load_world(world)
        fixes = " ".join(r.data["fix"] for r in w.rules).lower()
        for rule in w.rules:
            if rule.cover:
                assert rule.coverage(rule.data["fix"].lower()) == 1.0, rule.id
            assert rule.data["marker"].lower() not in fixes, rule.id
