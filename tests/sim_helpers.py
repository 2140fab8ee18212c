"""Shared helpers for the simulator tests: run a policy through the real openai SDK and judge the outputs with real
phoenix-evals ClassificationEvaluators, both pointed at a simulator."""

from __future__ import annotations

import re
from typing import Any

from selfimprove.sim import generate_inputs, world_evals


def run_policy(base_url: str, world: str, prompt: str, *, n: int, seed: int = 11, model: str = "sim-small",
               temperature: float = 0.7, inputs: list | None = None) -> list[dict[str, str]]:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="sim", max_retries=0)
    rows = []
    for msgs in inputs or generate_inputs(world, n, seed):
        r = client.chat.completions.create(model=model, temperature=temperature,
                                           messages=[{"role": "system", "content": prompt}, *msgs])
        rows.append({"input": msgs[-1]["content"], "output": r.choices[0].message.content})
    return rows


def judge_rows(base_url: str, world: str, rows: list[dict[str, str]], **llm_kw: Any) -> dict[str, list[dict]]:
    """{eval name: [score dict per row]} from phoenix-evals' evaluate_dataframe."""
    import pandas as pd
    from phoenix.evals import LLM, ClassificationEvaluator, evaluate_dataframe

    llm = LLM(provider="openai", model="sim-judge", base_url=base_url, api_key="sim",
              initial_per_second_request_rate=1000, **llm_kw)
    evs = [ClassificationEvaluator(name=e["name"], llm=llm, prompt_template=e["template"], choices=e["choices"],
                                   temperature=0.0) for e in world_evals(world)]
    res = evaluate_dataframe(dataframe=pd.DataFrame(rows), evaluators=evs, hide_tqdm_bar=True)
    return {e.name: list(res[f"{e.name}_score"]) for e in evs}


def mean_scores(judged: dict[str, list[dict]]) -> dict[str, float]:
    return {name: sum(d["score"] for d in col) / len(col) for name, col in judged.items()}


def fenced(text: str) -> str:
    blocks = re.findall(r"```[^\n]*\n(.*?)\n```", text, re.DOTALL)
    return blocks[-1] if blocks else ""


def kill_once_submitted(argv: list[str], journal_dir, timeout: float = 120.0) -> None:
    """Run `argv` in a child process and kill -9 it as soon as its batch journal holds a submitted batch (the
    window between a batch's submission and its collection). `journal_dir` may be a glob (a run folder the child
    has yet to create)."""
    import glob
    import os
    import signal
    import subprocess
    import time

    from selfimprove.llm.batch_journal import BatchJournal

    def submitted() -> bool:
        return any(r.state == "submitted" for d in glob.glob(str(journal_dir)) for r in BatchJournal(d).records())

    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    while not submitted():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the child never submitted its batch"
        time.sleep(0.05)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
