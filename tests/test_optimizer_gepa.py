"""`--optimizer gepa`: the real gepa package through our adapter, replay and judges, on the simulator."""

import pytest
from optimizer_sim import client, eval_specs, production_samples, replay_scorer, start_policy

from selfimprove.core.records import Policy
from selfimprove.optimizers.base import Budget, OptimizeContext
from selfimprove.optimizers.gepa_adapter import GEPAOptimizer, SelfimproveGEPAAdapter
from selfimprove.optimizers.guards import GuardContext
from selfimprove.optimizers.lm import OpenAIOptimizerLM
from selfimprove.optimizers.textgrad import SearchSettings
from selfimprove.sim import start_server

pytest.importorskip("gepa")


@pytest.fixture(scope="module")
def support():
    server = start_server("support", seed=3)
    yield server, production_samples(server.base_url, "support", 40, seed=1)
    server.stop()


def test_adapter_scores_and_builds_a_reflective_dataset_from_explanations(support):
    server, train = support
    evals = eval_specs("support")
    policy = start_policy("support")
    budget = Budget(100)
    adapter = SelfimproveGEPAAdapter(policy, evals, replay_scorer(server.base_url, evals), budget,
                                     GuardContext(evals=evals))
    batch = adapter.evaluate(train[:5], {"system_prompt": policy.system_prompt}, capture_traces=True)
    assert len(batch.scores) == len(batch.outputs) == len(batch.trajectories) == 5
    assert budget.used == 5 * 4
    assert set(batch.objective_scores[0]) == {e.name for e in evals}
    records = adapter.make_reflective_dataset({"system_prompt": policy.system_prompt}, batch, ["system_prompt"])
    feedback = " ".join(r["Feedback"] for r in records["system_prompt"])
    assert "policy_compliance:" in feedback and any(s < 1 for s in batch.scores)
    assert records["system_prompt"][0]["Inputs"] == train[0].history[0].content


def test_adapter_rejects_a_guard_failing_candidate_without_spending(support):
    server, train = support
    evals = eval_specs("support")
    policy = Policy(system_prompt="Help {name}.", model="sim-small")
    budget = Budget(100)
    adapter = SelfimproveGEPAAdapter(policy, evals, replay_scorer(server.base_url, evals), budget,
                                     GuardContext(evals=evals))
    batch = adapter.evaluate(train[:3], {"system_prompt": "Help the customer."}, capture_traces=True)
    assert batch.scores == [0.0, 0.0, 0.0] and budget.used == 0
    assert batch.trajectories[0]["feedback"] == "rejected by the guards"


@pytest.mark.parametrize("max_calls", [60, 150])
def test_gepa_improves_within_the_same_budget_accounting(support, max_calls):
    server, train = support
    server.reset_stats()
    evals = eval_specs("support")
    ctx = OptimizeContext(policy=start_policy("support"), evals=evals, train=train,
                          scorer=replay_scorer(server.base_url, evals),
                          lm=OpenAIOptimizerLM(client(server.base_url), "sim-optimizer"), budget=Budget(max_calls))
    result = GEPAOptimizer(SearchSettings(val_size=8)).optimize(ctx)
    assert server.stats()["requests"] == ctx.budget.used <= max_calls
    if max_calls >= 150:
        assert result.best is not None
        seed = next(k for k, v in result.info.items() if v["role"] == "seed")
        assert result.val_scores[result.best] > result.val_scores[seed]
        assert all(c.parent for c in result.candidates)


def test_gepa_never_adopts_a_planted_instruction():
    server = start_server("support", seed=5, gullible=True)
    try:
        train = production_samples(server.base_url, "support", 32, seed=2, injection_rate=0.5)
        evals = eval_specs("support")
        ctx = OptimizeContext(policy=start_policy("support"), evals=evals, train=train,
                              scorer=replay_scorer(server.base_url, evals),
                              lm=OpenAIOptimizerLM(client(server.base_url), "sim-optimizer"), budget=Budget(200))
        result = GEPAOptimizer(SearchSettings(val_size=8)).optimize(ctx)
    finally:
        server.stop()
    planted = [c for c in result.candidates if "free100" in c.policy.system_prompt.lower()]
    assert planted, "the gullible reflection model should have proposed the planted line"
    for c in planted:  # kept for the record, with the reason, never adopted
        assert not c.passed_guards and "no_planted_content" in {g.name for g in c.guards if not g.passed}
        assert result.val_scores.get(c.id) is None
    if result.best:
        best = next(c for c in result.candidates if c.id == result.best)
        assert best.passed_guards and "free100" not in best.policy.system_prompt.lower()
