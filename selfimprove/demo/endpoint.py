"""Which models `selfimprove demo` runs on — the built-in SIMULATOR or a REAL MODEL at an OpenAI-compatible
endpoint — and what a real run will spend, estimated before anything is sent.

Rules (`resolve_endpoint`): no `--base-url` and no `--real` → the simulator (also when OPENAI_API_KEY is set: a
real run is never started by accident). `--real` → https://api.openai.com/v1; `--base-url URL` → that endpoint. A
real endpoint reads its key from the variable *named* by `--api-key-env` (default OPENAI_API_KEY); the key is
checked to exist and then forgotten: configs, logs and reports only ever hold the variable's name.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from pydantic import BaseModel, ConfigDict

from selfimprove.core.errors import UsageError
from selfimprove.core.secrets import is_env_var_name, redact

OPENAI_URL = "https://api.openai.com/v1"
SIM_KEY_ENV = "SELFIMPROVE_DEMO_API_KEY"  # the simulator's dummy-key variable (set by the demo, never a real key)
# Real-model defaults: a cheap task model; judge and optimizer a different family member, so the judge does not
# grade its own model's style (snapshot warns about a judge equal to the task model).
REAL_DEFAULTS = {"task": "gpt-4o-mini", "judge": "gpt-4.1-mini", "optimizer": "gpt-4.1-mini"}
# US dollars per million tokens (OpenAI list prices, 2025) — for the estimate and the ledger; check your own.
LIST_PRICES = {
    "gpt-4o-mini": {"input": 0.15, "output": 0.60},
    "gpt-4o": {"input": 2.50, "output": 10.00},
    "gpt-4.1-nano": {"input": 0.10, "output": 0.40},
    "gpt-4.1-mini": {"input": 0.40, "output": 1.60},
    "gpt-4.1": {"input": 2.00, "output": 8.00},
}
# Rough tokens per call (input, output), for the estimate only.
TOKENS = {"task": (400, 200), "judge": (700, 60), "optimizer": (2500, 700)}
UPDATE_MAX_CALLS = 300  # the demo config's update.max_calls
TEST_SHARE = 0.3  # split.test_size's default


class DemoEndpoint(BaseModel):
    model_config = ConfigDict(frozen=True)

    real: bool
    base_url: str | None  # None: the simulator the demo starts
    api_key_env: str
    task_model: str
    judge_model: str
    optimizer_model: str

    @property
    def host(self) -> str:
        return urlparse(self.base_url or "").netloc or "the built-in simulator"

    @property
    def label(self) -> str:
        return f"REAL MODEL {self.task_model} at {self.host}" if self.real else "SIMULATOR"

    @property
    def notice(self) -> str:
        if not self.real:
            return ("SIMULATOR: every model, judge and optimizer below is selfimprove's built-in simulator, "
                    "not a real LLM.")
        return (f"{self.label}: task {self.task_model}, judge {self.judge_model}, optimizer "
                f"{self.optimizer_model} (key from ${self.api_key_env}); the production inputs are the "
                "world's synthetic customer messages. This run spends money on that endpoint.")


def resolve_endpoint(world: str, *, real: bool = False, base_url: str | None = None,
                     api_key_env: str | None = None, task_model: str | None = None, judge_model: str | None = None,
                     optimizer_model: str | None = None, environ: Mapping[str, str] | None = None) -> DemoEndpoint:
    """The demo's endpoint and models from the CLI options; see the module docstring. Raises UsageError for
    model options without a real endpoint, a key passed where a variable name belongs, or a missing key."""
    from selfimprove.llm.openai_chat import LOOPBACK
    from selfimprove.sim import default_policy

    environ = os.environ if environ is None else environ
    picked = {"task": task_model, "judge": judge_model, "optimizer": optimizer_model}
    if base_url is None and not real:
        if any(picked.values()) or api_key_env:
            raise UsageError("--task-model, --judge-model, --optimizer-model and --api-key-env choose a real model",
                             hint="add --real (OpenAI, key in OPENAI_API_KEY) or --base-url URL; without them the "
                                  "demo runs on the built-in simulator")
        return DemoEndpoint(real=False, base_url=None, api_key_env=SIM_KEY_ENV,
                            task_model=default_policy(world)["model"], judge_model="sim-judge",
                            optimizer_model="sim-optimizer")
    name = api_key_env or "OPENAI_API_KEY"
    if not is_env_var_name(name):
        raise UsageError(f"--api-key-env takes the NAME of an environment variable, not a key (got {redact(name)})",
                         hint="export MY_KEY=... and pass --api-key-env MY_KEY")
    url = (base_url or OPENAI_URL).rstrip("/")
    if not environ.get(name) and (urlparse(url).hostname or "") not in LOOPBACK:  # a local server may need none
        raise UsageError(f"environment variable {name} is not set (a real-model demo needs its key for {url})",
                         hint=f"export {name}=... or run without --real/--base-url for the simulator")
    models = {role: picked[role] or REAL_DEFAULTS[role] for role in picked}
    return DemoEndpoint(real=True, base_url=url, api_key_env=name, task_model=models["task"],
                        judge_model=models["judge"], optimizer_model=models["optimizer"])


def prices(ep: DemoEndpoint) -> dict[str, dict[str, float]]:
    """Per-model prices for the config's [llm.prices]: the simulator's, or the list prices of the models known."""
    from selfimprove.sim import PRICES

    if not ep.real:
        return dict(PRICES)
    table = {**PRICES, **LIST_PRICES}  # a sim-* model behind --base-url is priced like the simulator's
    return {m: table[m] for m in sorted({ep.task_model, ep.judge_model, ep.optimizer_model}) if m in table}


def evaluate_max_calls(traffic: int, n_evals: int) -> int:
    """Evaluate's call budget: baseline replay + one candidate on the held-out share, each judged by every eval."""
    test_n = max(1, round(traffic * TEST_SHARE))
    return test_n * 2 * (1 + n_evals)


def estimate(ep: DemoEndpoint, world: str, traffic: int) -> dict[str, Any]:
    """Calls by phase (update and evaluate at their budgets: upper bounds) and a rough cost in US dollars (None when
    a model has no known price)."""
    from selfimprove.sim import world_evals

    n_evals = len(world_evals(world))
    ev = evaluate_max_calls(traffic, n_evals)
    table = {**LIST_PRICES, **prices(ep)}

    def usd(role: str, calls: int) -> float | None:
        model = {"task": ep.task_model, "judge": ep.judge_model, "optimizer": ep.optimizer_model}[role]
        if model not in table:
            return None
        tin, tout = TOKENS[role]
        return calls * (tin * table[model]["input"] + tout * table[model]["output"]) / 1e6

    ev_task = ev // (1 + n_evals)
    parts = [usd("task", traffic), usd("judge", traffic * n_evals), usd("optimizer", UPDATE_MAX_CALLS),
             usd("task", ev_task), usd("judge", ev - ev_task)]
    calls = {"production": traffic, "production_judges": traffic * n_evals, "update_max": UPDATE_MAX_CALLS,
             "evaluate_max": ev}
    total = None if any(p is None for p in parts) else round(sum(parts), 2)
    unpriced = sorted({m for m in (ep.task_model, ep.judge_model, ep.optimizer_model) if m not in table})
    return {"calls": calls, "total_calls": sum(calls.values()), "usd": total, "unpriced_models": unpriced}


def describe_estimate(ep: DemoEndpoint, est: dict[str, Any]) -> str:
    c = est["calls"]
    cost = (f"about ${est['usd']:.2f} at list prices (rough token counts; the update is priced at the optimizer's "
            "rate)" if est["usd"] is not None else
            f"unknown (no price for {', '.join(est['unpriced_models'])})")
    return (f"Estimate for {ep.label}: at most {est['total_calls']} calls — {c['production']} production + "
            f"{c['production_judges']} judge calls, update ≤ {c['update_max']}, evaluate ≤ {c['evaluate_max']}; "
            f"cost {cost}.")
