"""A task on which a REAL small model's behaviour responds to its prompt, judged by deterministic code evals.

Customer-support replies (the support world's public synthetic messages) by a local Qwen 0.5B, with a deliberately
weak system prompt. Two code evals decide, each with an explanation the optimizer can learn from:
- `concise` (primary): the reply is under 50 words (measured on these models: adding that rule to the prompt moved
  compliance 7 -> 19 of 20 on the 1.5B and 8 -> 14 on the 0.5B);
- `plain_text`: no Markdown (headings, bullet or numbered lists, bold) — a chat widget shows it raw.
An LLM judge (`helpful`, phoenix-evals ClassificationEvaluator on the 1.5B) may run alongside on a few rows as a
robustness probe: a small model's judge answers are often unparseable, and each such row is counted by reason,
never dropped and never retried five times. It does not decide anything (the loop's `evals.include` leaves it out).

Production is made the way a team would: traced calls through the real openai SDK (selfimprove.sim.traffic's sender),
then phoenix-evals code evaluators with the EvalInstrumentor on, logged back to Phoenix as span annotations.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TASK_MODEL = "qwen0.5b"
OPTIMIZER_MODEL = "qwen1.5b"
JUDGE_MODEL = "qwen1.5b"
WORLD = "support"  # whose public inputs (synthetic customer messages) the task answers
PRIMARY = "concise"
CODE_EVALS = ("concise", "plain_text")
WORD_LIMIT = 50
WEAK_PROMPT = "You are a customer support assistant for Acme. Help the customer with their message."
TASK_PARAMS = {"temperature": 0.7, "max_tokens": 120}  # ~90 words: enough to see a reply run long
JUDGE_TEMPLATE = ("Is this reply to a customer helpful and polite?\n\nCustomer: {input}\n\nReply: {output}\n\n"
                  "Answer helpful or unhelpful.")
_MARKDOWN = re.compile(r"(^\s{0,3}(#{1,6}\s|[-*+]\s|\d+[.)]\s))|\*\*|__", re.MULTILINE)


def concise(output: str) -> dict[str, Any]:
    """1 when the reply is under WORD_LIMIT words; the explanation says how long it was."""
    words = len(output.split())
    ok = words < WORD_LIMIT
    return {"label": "concise" if ok else "too_long", "score": 1.0 if ok else 0.0,
            "explanation": f"the reply has {words} words; replies must be under {WORD_LIMIT} words"
                           + ("" if ok else f": cut {words - WORD_LIMIT + 1} or more")}


def plain_text(output: str) -> dict[str, Any]:
    """1 when the reply has no Markdown; the explanation quotes the first Markdown found."""
    found = _MARKDOWN.search(output)
    if found is None:
        return {"label": "plain", "score": 1.0, "explanation": "plain text, no Markdown"}
    at = found.start() + len(found.group(0)) - len(found.group(0).lstrip())  # the match may begin with newlines
    line = output[output.rfind("\n", 0, at) + 1:].split("\n", 1)[0].strip()
    return {"label": "markdown", "score": 0.0,
            "explanation": f"the reply uses Markdown ({line[:40]!r}); the chat widget shows it raw: write plain "
                           "sentences without lists, headings or bold"}


CHECKS = {"concise": concise, "plain_text": plain_text}


def register_code_evals() -> None:
    """Make `concise` and `plain_text` replayable by update and evaluate (selfimprove.evals.code_evals)."""
    from selfimprove.evals.code_evals import register

    for name, fn in CHECKS.items():
        register(name)(fn)


def code_evaluators() -> list[Any]:
    """The same checks as phoenix-evals code evaluators (what production judging runs)."""
    from phoenix.evals import create_evaluator

    return [create_evaluator(name=name, kind="code")(fn) for name, fn in CHECKS.items()]


def llm_judge(base_url: str, model: str = JUDGE_MODEL, max_tokens: int = 96, *, explain: bool = True,
              name: str = "helpful") -> Any:
    """The robustness probe: a phoenix-evals ClassificationEvaluator on a local model, asking for an explanation
    and the label (phoenix-evals' default schema) or, with `explain=False`, the label alone. `max_tokens` bounds
    what a looping answer costs."""
    from phoenix.evals import LLM, ClassificationEvaluator

    llm = LLM(provider="openai", model=model, base_url=base_url, api_key="local-model-needs-no-key")
    return ClassificationEvaluator(name=name, llm=llm, prompt_template=JUDGE_TEMPLATE,
                                   choices={"helpful": 1.0, "unhelpful": 0.0}, temperature=0.0,
                                   max_tokens=max_tokens, include_explanation=explain)


def policy(system_prompt: str = WEAK_PROMPT, model: str = TASK_MODEL) -> dict[str, Any]:
    return {"model": model, "system_prompt": system_prompt, **TASK_PARAMS}


def local_config(*, target: str, phoenix_url: str, project: str, task_url: str, optimizer_url: str,
                 min_new_samples: int = 20, update_max_calls: int = 60, evaluate_max_calls: int = 200,
                 optimizer: str = "builtin") -> str:
    """The target's TOML for the local task: task calls to `task_url` (llama-server, one request at a time, so
    concurrency 1 and long timeouts: a queued call on a busy 2-core machine waits minutes, and a retry would pay
    it twice), the optimizer on OPTIMIZER_MODEL at `optimizer_url`, the code evals deciding. No key anywhere: a
    loopback server needs none."""
    def endpoint(url: str, timeout: int) -> str:
        return (f'base_url = "{url}"\napi_key_env = "SELFIMPROVE_LOCAL_MODEL_KEY"\ntimeout_s = {timeout}\n'
                "max_retries = 1\n")

    return (f'# REAL MODEL (local): task {TASK_MODEL}, optimizer {OPTIMIZER_MODEL} on llama-server; code evals '
            f'decide.\ntarget = "{target}"\n\n[telemetry.phoenix]\nendpoint = "{phoenix_url}"\n'
            f'project = "{project}"\n\n[evals]\ninclude = {list(CODE_EVALS)!r}\nprimary = "{PRIMARY}"\n\n'
            f'[llm.task]\n{endpoint(task_url, 900)}\n[llm.optimizer]\nmodel = "{OPTIMIZER_MODEL}"\n'
            f'{endpoint(optimizer_url, 1200)}\n[llm.judge]\n{endpoint(optimizer_url, 900)}\n'
            f'[update]\noptimizer = "{optimizer}"\nmetaprompt = "compact"\ntrials = 1\nminibatch = 4\nrounds = 1\n'
            f'population = 2\n'
            f'max_calls = {update_max_calls}\n\n[evaluate]\nconcurrency = 1\nmax_calls = {evaluate_max_calls}\n\n'
            f'[split]\nmin_policy_samples = 10\n\n[trigger]\nmin_new_samples = {min_new_samples}\n')


@contextlib.contextmanager
def local_servers(task: str = TASK_MODEL, optimizer: str = OPTIMIZER_MODEL, *, threads: int | None = None,
                  log_dir: Path | None = None) -> Iterator[tuple[Any, Any]]:
    """(task server, optimizer server) on free loopback ports, one server when both are the same model; both are
    stopped when the block ends. Raises UsageError (make setup-real) when the binary or a model is not set up."""
    from selfimprove.llm.local.serve import ServerOptions, start_local_model

    options = ServerOptions(threads=threads)
    with contextlib.ExitStack() as stack:
        task_server = stack.enter_context(start_local_model(task, options, log_dir=log_dir))
        opt_server = task_server if optimizer == task else stack.enter_context(
            start_local_model(optimizer, options, log_dir=log_dir))
        yield task_server, opt_server
