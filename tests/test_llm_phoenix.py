"""phoenix-evals judges share our call cache and ledger through the caching HTTP transport."""

from __future__ import annotations

import pandas as pd
import pytest

from selfimprove.llm import CallCache, Ledger, OpenAIChat, run_many
from selfimprove.llm.httpx_cache import phoenix_llm_kwargs
from selfimprove.sim import start_server

TEMPLATE = "Question: {input}\nAnswer: {output}\nIs the answer correct?"


@pytest.fixture
def sim():
    server = start_server(world="support", seed=0)
    yield server
    server.stop()


def judge(sim, cache, ledger):
    from phoenix.evals import LLM, ClassificationEvaluator

    llm = LLM(provider="openai", model="sim-judge", base_url=sim.base_url, api_key="unused-on-loopback",
              initial_per_second_request_rate=1000, **phoenix_llm_kwargs(cache, ledger))
    return ClassificationEvaluator(name="correctness", llm=llm, prompt_template=TEMPLATE,
                                   choices={"correct": 1.0, "incorrect": 0.0}, temperature=0.0)


def test_phoenix_evals_calls_go_through_our_cache_and_ledger(sim, tmp_path):
    from phoenix.evals import evaluate_dataframe

    cache, ledger = CallCache(tmp_path), Ledger({"sim-judge": {"input": 1.0, "output": 1.0}})
    df = pd.DataFrame({"input": [f"Can I return item {i}?" for i in range(6)],
                       "output": [f"Yes, within 30 days ({i})." for i in range(6)]})
    first = evaluate_dataframe(dataframe=df, evaluators=[judge(sim, cache, ledger)], hide_tqdm_bar=True)
    stats = sim.stats()
    snap = ledger.snapshot()
    assert stats["requests"] == snap.calls == snap.succeeded == len(cache) == 6
    assert (snap.prompt_tokens, snap.completion_tokens) == (stats["tokens"]["sim-judge"]["prompt"],
                                                           stats["tokens"]["sim-judge"]["completion"])
    # a fresh evaluator (new clients, same cache): the re-run sends nothing and scores the same
    second = evaluate_dataframe(dataframe=df, evaluators=[judge(sim, cache, ledger)], hide_tqdm_bar=True)
    assert sim.stats()["requests"] == 6 and ledger.snapshot().cache_hits == 6
    assert [s["label"] for s in second["correctness_score"]] == [s["label"] for s in first["correctness_score"]]
    assert [s["explanation"] for s in second["correctness_score"]] == [
        s["explanation"] for s in first["correctness_score"]
    ]

    # our own client asking the judge the same request hits the entry phoenix-evals wrote
    entry = cache.get("sha256:" + next(tmp_path.glob("??/*.json")).stem)
    body = dict(entry["request"])
    messages, model = body.pop("messages"), body.pop("model")
    chat = OpenAIChat(sim.base_url, "SELFIMPROVE_TEST_NO_KEY", model=model, cache=cache, ledger=ledger)
    [result] = run_many(chat, [{"messages": messages, **body}])
    assert result.cached and result.message == entry["response"]["choices"][0]["message"]
    assert sim.stats()["requests"] == 6
