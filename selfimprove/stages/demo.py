"""`selfimprove demo`: the whole loop on a local Phoenix and the built-in SIMULATOR, with no API key.

1. A fresh workspace `<workdir>/<UTC stamp>/` (configs/, runs/, prompts/, phoenix/ with its sqlite DB).
2. The simulator (a thread on a free loopback port) and a local Phoenix (a subprocess, `phoenix/` as its DB dir).
3. "Production": N calls with the world's deliberately weak default prompt, traced to Phoenix, judged by the
   world's evals with real phoenix-evals evaluators run through the EvalInstrumentor, logged back as span
   annotations whose metadata carries each eval's spec (selfimprove.sim.traffic.make_traffic).
4. A config for the demo target (the local Phoenix, the simulator's base_url; `api_key_env` names a variable the
   demo sets to a dummy value: no key is written anywhere), then `run_loop` with `--push-phoenix`.
5. The result: baseline vs promoted on held-out data with the CI, the prompt diff, the build chain, the Phoenix UI
   address and the HTML report path — every number labelled as coming from the simulator.

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

KEY_ENV = "SELFIMPROVE_DEMO_API_KEY"
TARGET = "demo"
BANNER = "SIMULATOR: every model, judge and optimizer below is selfimprove's built-in simulator, not a real LLM."


class DemoResult(BaseModel):
    simulator: bool = True
    notice: str = BANNER
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
    seconds: float = 0.0

    def render(self, console) -> None:
        from selfimprove.stages.views import render_demo

        render_demo(console, self)


def demo_config(*, phoenix_url: str, project: str, sim_base_url: str, primary: str, target: str = TARGET,
                min_new_samples: int = 20) -> str:
    """The demo target's TOML: the local Phoenix, the simulator for task/optimizer/judge, its prices."""
    from selfimprove.sim import PRICES

    prices = "".join(f'[llm.prices.{m}]\ninput = {p["input"]}\noutput = {p["output"]}\n\n' for m, p in PRICES.items())
    endpoint = f'base_url = "{sim_base_url}"\napi_key_env = "{KEY_ENV}"\n'
    return (f'# The selfimprove demo target. Every model here is the built-in SIMULATOR at {sim_base_url}.\n'
            f'target = "{target}"\n\n[telemetry.phoenix]\nendpoint = "{phoenix_url}"\nproject = "{project}"\n\n'
            f'[evals]\nprimary = "{primary}"\n\n[llm.task]\n{endpoint}\n[llm.optimizer]\nmodel = "sim-optimizer"\n'
            f'{endpoint}\n[llm.judge]\n{endpoint}\n{prices}'
            '[update]\ntrials = 3\nmax_calls = 300\n\n[evaluate]\nconcurrency = 16\n\n'
            f'[trigger]\nmin_new_samples = {min_new_samples}\n')


def run_demo(*, workdir: str | Path = ".selfimprove-demo", world: str = "support", traffic: int = 160,
             seed: int = 0,
             keep_running: bool = False, say: Callable[[str], None] | None = None,
             on_result: Callable[[DemoResult], None] | None = None) -> DemoResult:
    """Run the demo; see the module docstring. `say` receives progress lines; `on_result` sees the result before
    a `keep_running` demo waits for Ctrl-C."""
    from selfimprove.phoenix_server import start_phoenix
    from selfimprove.sim import start_server, world_evals
    from selfimprove.sim.traffic import make_traffic
    from selfimprove.stages.loop import run_loop

    say = say or (lambda _text: None)
    started = time.monotonic()
    root = _fresh_folder(Path(workdir).resolve(), dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ"))
    project = f"selfimprove-demo-{world}"
    primary = next((e["name"] for e in world_evals(world) if e.get("primary")), world_evals(world)[0]["name"])
    result = DemoResult(world=world, workspace=str(root), phoenix_project=project)
    say(BANNER)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_env(KEY_ENV, "simulator-needs-no-key"))
        say(f"Starting the simulator (world '{world}') …")
        sim = start_server(world, seed=seed)
        stack.callback(sim.stop)
        say(f"Simulator (OpenAI-compatible, simulated models) at {sim.base_url}")
        say(f"Starting a local Phoenix (sqlite in {root / 'phoenix'}; ~15 s) …")
        px = start_phoenix(workdir=root / "phoenix", timeout=120)
        stack.callback(px.stop)
        result.phoenix_url, result.phoenix_running = px.url, True
        say(f"Phoenix UI: {px.url}  ·  simulating {traffic} production calls with the world's weak default "
            "prompt, judged by its evals …")
        made = make_traffic(world, traffic, phoenix_url=px.url, project=project, sim_base_url=sim.base_url,
                            seed=seed)
        result.traffic = {k: made[k] for k in ("calls", "errors", "spans", "annotations", "scores", "policy")}
        (root / "configs").mkdir()
        (root / "configs" / f"{TARGET}.toml").write_text(demo_config(
            phoenix_url=px.url, project=project, sim_base_url=sim.base_url, primary=primary))
        say("Running the loop: pull → snapshot → update → evaluate → promote …")
        loop = run_loop(root=root, target=TARGET, seed=seed, push_phoenix=True,
                        on_step=lambda s: say(f"  {s.stage:<9} {s.status:<8} {s.detail}  ({s.seconds:.1f} s)"))
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
