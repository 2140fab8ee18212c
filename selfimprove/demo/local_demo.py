"""`selfimprove demo --local-model`: the whole loop on a REAL small model running on this machine (no key, no money).

Same shape as the simulator demo (selfimprove.demo.run): a fresh workspace, a local Phoenix, production, then
pull → snapshot → update → evaluate → promote, but every model is a local llama-server (`make setup-real`): the
task model Qwen 0.5B answers customer messages, Qwen 1.5B is the optimizer, and the deterministic code evals of
selfimprove.demo.local_task decide (`concise`: under 50 words; `plain_text`: no Markdown). An LLM judge on the
1.5B probes a few replies through phoenix-evals; its unparseable answers are counted, not used. Every number is
labelled REAL MODEL (local <task model>). Slow by nature: 10-20 minutes on two cores.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path

from selfimprove.demo.local_task import (
    CODE_EVALS,
    OPTIMIZER_MODEL,
    TASK_MODEL,
    WORD_LIMIT,
    local_config,
    local_servers,
    register_code_evals,
)

TARGET = "demo"
JUDGE_PROBE_ROWS = 3


def label(task_model: str = TASK_MODEL) -> str:
    return f"REAL MODEL (local {task_model})"


def notice(task_model: str, optimizer_model: str, traffic: int) -> str:
    return (f"{label(task_model)}: task {task_model} and optimizer {optimizer_model} run on llama-server on this "
            f"machine (no key, no cost). Code evals decide: {CODE_EVALS[0]} (under {WORD_LIMIT} words, primary) "
            f"and {CODE_EVALS[1]} (no Markdown); an LLM judge on {optimizer_model} probes {JUDGE_PROBE_ROWS} of "
            f"the {traffic} replies. Slow: tens of calls per minute on two cores.")


def run_local_demo(*, workdir: str | Path = ".selfimprove-demo", traffic: int = 30, seed: int = 0,
                   task_model: str = TASK_MODEL, optimizer_model: str = OPTIMIZER_MODEL,
                   threads: int | None = None, keep_running: bool = False,
                   say: Callable[[str], None] | None = None, on_result: Callable[..., None] | None = None):
    """Run the local-model demo; returns a selfimprove.demo.run.DemoResult (mode "real", label REAL MODEL
    (local <task model>)). Raises UsageError before starting anything when `make setup-real` has not run."""
    from selfimprove.demo.local_traffic import make_local_traffic
    from selfimprove.demo.run import DemoResult, _fill, _fresh_folder
    from selfimprove.llm.local.serve import server_command
    from selfimprove.stages.loop import run_loop
    from selfimprove.telemetry.phoenix_server import start_phoenix

    say = say or (lambda _text: None)
    for name in {task_model, optimizer_model}:
        server_command(name, 0, _options(threads))  # not set up: a UsageError now, before any folder or process
    started = time.monotonic()
    root = _fresh_folder(Path(workdir).resolve(), dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"))
    project = "selfimprove-demo-local"
    text = notice(task_model, optimizer_model, traffic)
    result = DemoResult(simulator=False, mode="real", label=label(task_model), notice=text, world="local-support",
                        workspace=str(root), phoenix_project=project,
                        models={"task": task_model, "judge": f"code evals ({', '.join(CODE_EVALS)})",
                                "optimizer": optimizer_model})
    say(text)
    register_code_evals()
    with contextlib.ExitStack() as stack:
        say(f"Starting llama-server for {task_model} and {optimizer_model} (loading the models) …")
        task, optimizer = stack.enter_context(local_servers(task_model, optimizer_model, threads=threads,
                                                            log_dir=root / "llama"))
        say(f"{label(task_model)} at {task.base_url}; optimizer {optimizer_model} at {optimizer.base_url}")
        say(f"Starting a local Phoenix (sqlite in {root / 'phoenix'}; ~15 s) …")
        px = stack.enter_context(start_phoenix(workdir=root / "phoenix", timeout=120))
        result.phoenix_url, result.phoenix_running = px.url, True
        say(f"Phoenix UI: {px.url}  ·  {traffic} production calls on {task_model} with a weak prompt, judged by "
            "the code evals …")
        made = make_local_traffic(traffic, phoenix_url=px.url, project=project, task_url=task.base_url,
                                  judge_url=optimizer.base_url, judge_rows=JUDGE_PROBE_ROWS, seed=seed)
        result.traffic = {k: made[k] for k in ("calls", "errors", "spans", "annotations", "scores", "policy",
                                               "llm_judge")}
        probe = made["llm_judge"]
        counts = ", ".join(f"{schema} {c['parsed']} of {c['parsed'] + c['failed']} parsed"
                           for schema, c in probe["by_schema"].items())
        say(f"LLM judge probe ({optimizer_model}, not used to decide): {counts}; failures {probe['reasons'] or 'none'}"
            f" in {probe['seconds']:.0f} s")
        (root / "configs").mkdir()
        (root / "configs" / f"{TARGET}.toml").write_text(local_config(
            target=TARGET, phoenix_url=px.url, project=project, task_url=task.base_url,
            optimizer_url=optimizer.base_url, min_new_samples=min(20, made["spans"])))
        say(f"Running the loop ({label(task_model)}): pull → snapshot → update → evaluate → promote …")
        loop = run_loop(root=root, target=TARGET, seed=seed, push_phoenix=True,
                        on_step=lambda s: say(f"  {s.stage:<9} {s.status:<8} {s.detail}  ({s.seconds:.1f} s)"))
        _fill(result, root, loop)
        result.seconds = round(time.monotonic() - started, 1)
        result.phoenix_running = keep_running
        if on_result:
            on_result(result)
        if keep_running:
            say(f"Phoenix stays up at {px.url} (project '{project}'); press Ctrl-C to stop.")
            with contextlib.suppress(KeyboardInterrupt):
                while px.is_running():
                    time.sleep(0.5)
        result.phoenix_running = False
    return result


def _options(threads: int | None):
    from selfimprove.llm.local.serve import ServerOptions

    return ServerOptions(threads=threads)
