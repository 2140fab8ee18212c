"""`selfimprove demo`: the whole loop on a local Phoenix and the built-in SIMULATOR with no API key — or, when asked
(`--real`, `--base-url`), on a REAL MODEL at an OpenAI-compatible endpoint (selfimprove.demo.endpoint).

1. A fresh workspace `<workdir>/<UTC stamp>/` (configs/, runs/, prompts/, phoenix/ with its sqlite DB).
2. The simulator (a thread on a free loopback port; not started for a real endpoint) and a local Phoenix (a
   subprocess, `phoenix/` as its DB dir). A real run first shows its call/cost estimate and needs `yes` or
   `confirm(...)` before anything starts.
3. "Production": N calls of the world's public inputs with its deliberately weak default prompt (on the task model),
   traced to Phoenix, judged by the world's eval templates with real phoenix-evals evaluators run through the
   EvalInstrumentor, logged back as span annotations whose metadata carries each eval's spec
   (selfimprove.sim.traffic.make_traffic).
4. A config for the demo target (the local Phoenix, the endpoint's base_url; `api_key_env` names the variable: for
   the simulator one the demo sets to a dummy value; no key is written anywhere), then `run_loop` with
   `--push-phoenix`.
5. The result: baseline vs promoted on held-out data with the CI, the prompt diff, the build chain, the Phoenix UI
   address and the HTML report path — every number labelled SIMULATOR or REAL MODEL <task model> at <host>.

Every process the demo started is stopped on return, on error and on Ctrl-C; with `keep_running` Phoenix stays
up (and the simulator with it) until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selfimprove.demo.endpoint import SIM_KEY_ENV, DemoEndpoint

KEY_ENV = SIM_KEY_ENV
TARGET = "demo"
BANNER = "SIMULATOR: every model, judge and optimizer below is selfimprove's built-in simulator, not a real LLM."


class DemoResult(BaseModel):
    simulator: bool = True
    mode: str = "simulator"  # or "real"
    label: str = "SIMULATOR"  # or "REAL MODEL <task model> at <host>"
    notice: str = BANNER
    models: dict[str, str] = {}
    estimate: dict[str, Any] | None = None  # a real run's call/cost estimate, shown before spending
    world: str
    workspace: str
    phoenix_url: str | None = None
    phoenix_project: str
    phoenix_running: bool = False
    traffic: dict[str, Any] = {}
    outcome: str = ""
    loop: dict[str, Any] = {}
    primary: dict[str, Any] | None = None
    prompt_diff: str = ""
    chain: list[dict[str, Any]] = []
    production: str | None = None
    report_html: str | None = None
    batch: bool = False  # update's and evaluate's replays and judge calls went through the Batch API
    seconds: float = 0.0


def demo_config(*, phoenix_url: str, project: str, sim_base_url: str | None, primary: str, target: str = TARGET,
                min_new_samples: int = 20, endpoint: DemoEndpoint | None = None,
                evaluate_max_calls: int | None = None, batch: bool = False) -> str:
    """The demo target's TOML: the local Phoenix, the endpoint (default: the simulator at `sim_base_url`) for
    task/optimizer/judge, its prices. Only the key variable's *name* is written. `batch`: replays and judge calls
    through the Batch API (`[llm.batch]`; the simulator's batches finish at once, so it polls every 0.2 s)."""
    from selfimprove.demo.endpoint import UPDATE_MAX_CALLS, prices

    ep = endpoint or DemoEndpoint(real=False, base_url=sim_base_url, api_key_env=KEY_ENV, task_model="sim-small",
                                  judge_model="sim-judge", optimizer_model="sim-optimizer")
    url = ep.base_url if ep.real else sim_base_url
    table = "".join(f'[llm.prices."{m}"]\ninput = {p["input"]}\noutput = {p["output"]}\n\n'
                    for m, p in prices(ep).items())
    conn = f'base_url = "{url}"\napi_key_env = "{ep.api_key_env}"\n'
    what = f"{ep.label} (key from ${ep.api_key_env})" if ep.real else f"the built-in SIMULATOR at {url}"
    budget = f"max_calls = {evaluate_max_calls}\n" if evaluate_max_calls else ""
    return (f'# The selfimprove demo target. Every model here is {what}.\n'
            f'target = "{target}"\n\n[telemetry.phoenix]\nendpoint = "{phoenix_url}"\nproject = "{project}"\n\n'
            f'[evals]\nprimary = "{primary}"\n\n[llm.task]\n{conn}\n[llm.optimizer]\n'
            f'model = "{ep.optimizer_model}"\n{conn}\n[llm.judge]\n{conn}\n{table}'
            f'[update]\ntrials = 3\nmax_calls = {UPDATE_MAX_CALLS}\n\n[evaluate]\n'
            f'concurrency = {8 if ep.real else 16}\n{budget}\n'
            f'[trigger]\nmin_new_samples = {min_new_samples}\n' + (_batch_section(ep) if batch else ""))


def _batch_section(ep: DemoEndpoint) -> str:
    """`[llm.batch]` of a demo run with --batch: the defaults against a real provider (a batch may take hours), a
    fast poll against the simulator, whose batches are done at the first look."""
    fast = "" if ep.real else "poll_s = 0.2\ngather_s = 0.1\n"
    return f"\n[llm.batch]\nenabled = true\n{fast}"


def run_demo(*, workdir: str | Path = ".selfimprove-demo", world: str = "support", traffic: int = 160,
             seed: int = 0, endpoint: DemoEndpoint | None = None, yes: bool = False,
             confirm: Callable[[str], bool] | None = None,
             keep_running: bool = False, say: Callable[[str], None] | None = None,
             on_result: Callable[[DemoResult], None] | None = None, batch: bool = False) -> DemoResult:
    """Run the demo; see the module docstring. `endpoint` (selfimprove.demo.endpoint.resolve_endpoint;
    default: the simulator) says which models run; a real one spends only with `yes` or `confirm(question)` true.
    `batch`: the loop's replays and judge calls go through the endpoint's Batch API (docs/batch.md).
    `say` receives progress lines; `on_result` sees the result before a `keep_running` demo waits for Ctrl-C."""
    from selfimprove.demo.endpoint import estimate, evaluate_max_calls, resolve_endpoint
    from selfimprove.sim import start_server, world_evals
    from selfimprove.sim.traffic import make_traffic
    from selfimprove.stages.loop import run_loop
    from selfimprove.telemetry.phoenix_server import start_phoenix

    say = say or (lambda _text: None)
    ep = endpoint or resolve_endpoint(world)
    evals = world_evals(world)
    est = estimate(ep, world, traffic) if ep.real else None
    if ep.real:
        _approve(ep, est, yes=yes, confirm=confirm, say=say)
    started = time.monotonic()
    root = _fresh_folder(Path(workdir).resolve(), dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"))
    project = f"selfimprove-demo-{world}"
    primary = next((e["name"] for e in evals if e.get("primary")), evals[0]["name"])
    result = DemoResult(simulator=not ep.real, mode="real" if ep.real else "simulator", label=ep.label,
                        notice=ep.notice, estimate=est, world=world, workspace=str(root), phoenix_project=project,
                        models={"task": ep.task_model, "judge": ep.judge_model, "optimizer": ep.optimizer_model},
                        batch=batch)
    say(ep.notice)
    with contextlib.ExitStack() as stack:
        if ep.real:
            base_url = ep.base_url
            say(f"{ep.label}: endpoint {ep.base_url}, key from ${ep.api_key_env} (never written anywhere)")
        else:
            stack.enter_context(_env(KEY_ENV, "simulator-needs-no-key"))
            say(f"Starting the simulator (world '{world}') …")
            sim = start_server(world, seed=seed)
            stack.callback(sim.stop)
            base_url = sim.base_url
            say(f"Simulator (OpenAI-compatible, simulated models) at {sim.base_url}")
        say(f"Starting a local Phoenix (sqlite in {root / 'phoenix'}; ~15 s) …")
        px = start_phoenix(workdir=root / "phoenix", timeout=120)
        stack.callback(px.stop)
        result.phoenix_url, result.phoenix_running = px.url, True
        say(f"Phoenix UI: {px.url}  ·  {traffic} production calls ({ep.label}) with the world's weak default "
            "prompt, judged by its evals …")
        real = {"api_key_env": ep.api_key_env, "judge_model": ep.judge_model,
                "policy": {"model": ep.task_model}} if ep.real else {}
        made = make_traffic(world, traffic, phoenix_url=px.url, project=project, sim_base_url=base_url, seed=seed,
                            **real)
        result.traffic = {k: made[k] for k in ("calls", "errors", "spans", "annotations", "scores", "policy")}
        (root / "configs").mkdir()
        (root / "configs" / f"{TARGET}.toml").write_text(demo_config(
            phoenix_url=px.url, project=project, sim_base_url=base_url, primary=primary, endpoint=ep,
            evaluate_max_calls=evaluate_max_calls(traffic, len(evals)) if ep.real else None, batch=batch))
        via = ", replays and judges through the Batch API" if batch else ""
        say(f"Running the loop ({ep.label}{via}): pull → snapshot → update → evaluate → promote …")
        loop = run_loop(root=root, target=TARGET, seed=seed, push_phoenix=True,
                        on_step=lambda s: say(f"  {s.stage:<9} {s.status:<8} {s.detail}  ({s.seconds:.1f} s)"),
                        log=(lambda line: say(f"    {line}")) if batch else None)
        _fill(result, root, loop)
        result.seconds = round(time.monotonic() - started, 1)
        result.phoenix_running = keep_running  # what the user will find once the result is shown
        if on_result:
            on_result(result)
        if keep_running:
            say(f"Phoenix stays up at {px.url} (project '{project}', prompt '{TARGET}'); press Ctrl-C to stop.")
            try:
                while px.is_running():
                    time.sleep(0.5)
            except KeyboardInterrupt:
                say("Stopping Phoenix and the simulator …")
        result.phoenix_running = False
    return result


def _approve(ep: DemoEndpoint, est: dict[str, Any] | None, *, yes: bool, confirm: Callable[[str], bool] | None,
             say: Callable[[str], None]) -> None:
    """Show a real run's estimate; go on only with `yes` or a confirmed question (nothing started before)."""
    from selfimprove.core.errors import UsageError
    from selfimprove.demo.endpoint import describe_estimate

    say(describe_estimate(ep, est or {}))
    if yes:
        return
    if confirm is None:
        raise UsageError(f"a demo on {ep.label} spends money; nothing was started",
                         hint="pass --yes to accept the estimate above (or run without --real/--base-url for the "
                              "free simulator)")
    if not confirm(f"Spend this on {ep.label}?"):
        raise UsageError("demo cancelled before spending anything", hint="pass --yes to skip the question")


def _fill(result: DemoResult, root: Path, loop: Any) -> None:
    from selfimprove.stages.compare import diff
    from selfimprove.stages.history import target_history

    result.outcome, result.loop = loop.outcome, loop.model_dump(mode="json")
    result.primary, result.report_html, result.production = loop.primary, loop.report_html, loop.production
    history = target_history(root, TARGET)
    result.chain = history["builds"]
    if loop.outcome == "promoted" and loop.build:
        first = history["builds"][0]["name"]
        result.prompt_diff = diff(root, TARGET, first, loop.build)["prompt_diff"]


def _fresh_folder(parent: Path, stem: str) -> Path:
    """`parent/stem`, or `parent/stem-2`, … : a folder no earlier demo used."""
    for i in range(1, 1000):
        path = parent / (stem if i == 1 else f"{stem}-{i}")
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise FileExistsError(f"no fresh folder under {parent}")


@contextlib.contextmanager
def _env(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old
