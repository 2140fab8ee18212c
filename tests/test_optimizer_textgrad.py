"""The built-in optimizer against the simulator (sim-small task model, sim-judge, sim-optimizer) over HTTP."""

import pytest
from optimizer_sim import CountingLM, client, eval_specs, production_samples, replay_scorer, start_policy

from selfimprove.core.errors import UsageError
from selfimprove.optimizers.base import Budget, OptimizeContext
from selfimprove.optimizers.lm import OpenAIOptimizerLM
from selfimprove.optimizers.textgrad import SearchSettings, TextGradOptimizer
from selfimprove.sim import start_server


@pytest.fixture(scope="module")
def support():
    server = start_server("support", seed=3)
    train = production_samples(server.base_url, "support", 48, seed=1)
    yield server, train
    server.stop()


def context(server, train, max_calls, lm=None, **kw):
    evals = eval_specs("support")
    lm = lm or OpenAIOptimizerLM(client(server.base_url), "sim-optimizer")
    return OptimizeContext(policy=start_policy("support"), evals=evals, train=train,
                           scorer=replay_scorer(server.base_url, evals), lm=lm, budget=Budget(max_calls), **kw)


def test_update_beats_the_parent_on_train_validation(support):
    server, train = support
    ctx = context(server, train, 400)
    result = TextGradOptimizer(SearchSettings(trials=3, rounds=2, minibatch=8, val_size=16)).optimize(ctx)
    seed_id = next(k for k, v in result.info.items() if v["role"] == "seed")
    assert result.best is not None and result.best != seed_id
    assert result.val_scores[result.best] > result.val_scores[seed_id] + 0.05, result.val_scores
    best = next(c for c in result.candidates if c.id == result.best)
    assert best.passed_guards and best.edits and best.rationale
    assert ctx.budget.used <= 400
    roles = {v["role"] for v in result.info.values()}
    assert {"seed", "trial", "merge"} <= roles
    assert result.taxonomy and result.taxonomy[0]["count"] >= result.taxonomy[-1]["count"]


def test_merge_keeps_edits_from_all_trials(support):
    server, train = support
    ctx = context(server, train, 200)
    result = TextGradOptimizer(SearchSettings(trials=3, rounds=1, minibatch=6, val_size=8)).optimize(ctx)
    merged = [k for k, v in result.info.items() if v["role"] == "merge"]
    assert len(merged) == 1
    info = result.info[merged[0]]
    assert len(info["trials"]) == 3
    prompt = next(c for c in result.candidates if c.id == merged[0]).policy.system_prompt.lower()
    for trial_id in info["trials"]:
        trial = next(c for c in result.candidates if c.id == trial_id)
        for edit in trial.edits:
            assert " ".join(edit.instruction.lower().split()) in prompt, (trial_id, edit.instruction)
    assert all(v == 1.0 for v in info["kept_trial_edits"].values())


@pytest.mark.parametrize("max_calls", [1, 30, 75, 133])
def test_budget_is_never_exceeded(support, max_calls):
    server, train = support
    server.reset_stats()
    ctx = context(server, train, max_calls)
    try:
        TextGradOptimizer(SearchSettings(trials=3, rounds=3, minibatch=6, val_size=8, fewshot=2,
                                         tune_temperature=True)).optimize(ctx)
    except UsageError as exc:  # the seed's validation pass does not fit a tiny budget: said before spending
        assert max_calls < 4 * 8 and "budget" in exc.message
    requests = server.stats()["requests"]
    assert requests <= max_calls and ctx.budget.used == requests


def test_planted_instruction_never_passes_the_guards():
    server = start_server("support", seed=5, gullible=True)
    try:
        train = production_samples(server.base_url, "support", 32, seed=2, injection_rate=0.5)
        lm = CountingLM(OpenAIOptimizerLM(client(server.base_url), "sim-optimizer"))
        ctx = context(server, train, 250, lm=lm)
        result = TextGradOptimizer(SearchSettings(trials=2, rounds=2, minibatch=8, val_size=8)).optimize(ctx)
    finally:
        server.stop()
    planted = "discount code free100"
    shown = [m["content"] for req in lm.requests for m in req if m["role"] == "user"]
    assert any(planted in s.lower() for s in shown)  # the optimizer really saw the planted text ...
    rejected = [c for c in result.candidates if planted in c.policy.system_prompt.lower()]
    assert rejected, "the gullible optimizer should have copied the planted line"  # ... and obeyed it
    for c in rejected:
        assert not c.passed_guards
        assert "no_planted_content" in {g.name for g in c.guards if not g.passed}
    for c in result.candidates:
        if c.passed_guards:
            assert planted not in c.policy.system_prompt.lower() and "free100" not in c.policy.system_prompt.lower()
    for req in lm.requests:  # trace content reaches the optimizer only inside the data delimiters
        user = req[1]["content"]
        for i in [i for i in range(len(user)) if user.lower().startswith(planted, i)]:
            assert user.rfind("<trace_data>", 0, i) > user.rfind("</trace_data>", 0, i)
