"""The local-model task's code evals (selfimprove.demo.local_task): what they score and what they tell the optimizer,
through the same code-eval path update and evaluate replay them with."""

from __future__ import annotations

import pytest

from selfimprove.core.records import EvalSpec
from selfimprove.demo.local_task import WORD_LIMIT, local_config, register_code_evals
from selfimprove.evals.code_evals import call_code_eval, get


@pytest.fixture(autouse=True)
def registered():
    register_code_evals()


def judge(name: str, output: str):
    return call_code_eval(get(name), EvalSpec(name=name, kind="code"), input="hi", output=output)


def test_concise_counts_words_and_says_how_many_to_cut():
    assert judge("concise", "word " * (WORD_LIMIT - 1)).score == 1.0
    long = judge("concise", "word " * (WORD_LIMIT + 9))
    assert long.score == 0.0 and long.label == "too_long"
    assert f"{WORD_LIMIT + 9} words" in long.explanation and "cut 10 or more" in long.explanation


@pytest.mark.parametrize("reply", ["Sure:\n- reset it\n- retry", "## Steps\nReset it.", "1. Reset it.",
                                   "Please **reset** it.", "Sure.\n\n1. Reset it.\n2. Retry."])
def test_plain_text_rejects_markdown_and_quotes_it(reply):
    result = judge("plain_text", reply)
    assert result.score == 0.0 and "Markdown" in result.explanation
    assert "('')" not in result.explanation  # the quoted line is the Markdown's, not the blank line before it


def test_plain_sentences_pass_even_with_numbers_and_hyphens():
    assert judge("plain_text", "Order 12345 ships in 2-3 days - sorry for the wait. Call 555-0100.").score == 1.0


def test_the_config_is_a_valid_target_with_the_code_evals_deciding():
    import tomllib

    from selfimprove.config.models import TargetConfig

    cfg = TargetConfig.model_validate(tomllib.loads(local_config(
        target="t", phoenix_url="http://127.0.0.1:1", project="p", task_url="http://127.0.0.1:2/v1",
        optimizer_url="http://127.0.0.1:3/v1")))
    assert cfg.evals.include == ["concise", "plain_text"] and cfg.evals.primary == "concise"
    assert cfg.llm.optimizer.model == "qwen1.5b" and cfg.evaluate.concurrency == 1
    assert cfg.llm.task.timeout_s >= 600  # a queued call on a busy 2-core machine waits minutes


def test_the_llm_judge_probe_counts_every_judgment_parsed_or_failed_by_reason(capsys):
    """phoenix-evals against the simulator over HTTP: a judge that answers in the schema is parsed under both
    schemas; answers cut off mid-JSON (a small model's looping explanation) are counted as failed with its reason, never dropped or retried."""
    from selfimprove.demo.local_traffic import probe_llm_judge
    from selfimprove.sim import start_server

    replies = [{"input": "Where is my order A-1?", "output": "It ships tomorrow."},
               {"input": "Refund please", "output": "I have passed your request to a colleague."}]
    server = start_server("support", seed=1)
    try:
        good = probe_llm_judge(replies, server.base_url, model="sim-judge")
        server.configure(judge_truncate_rate=1.0)
        bad = probe_llm_judge(replies, server.base_url, model="sim-judge")
    finally:
        server.stop()
    assert good["judgments"] == 4 and good["parsed"] == 4 and good["failed"] == 0, good
    assert good["by_schema"] == {"explained": {"parsed": 2, "failed": 0}, "label_only": {"parsed": 2, "failed": 0}}
    assert bad["parsed"] == 0 and bad["failed"] == 4 and sum(bad["reasons"].values()) == 4, bad
    assert all(reason.split(": ", 1)[0] in ("explained", "label_only") for reason in bad["reasons"])
    assert "Retries exhausted" not in capsys.readouterr().out  # phoenix-evals' own line kept off stdout
