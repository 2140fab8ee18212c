"""The built-in simulator: an OpenAI-compatible server with simulated task, judge and optimizer models.

It is a simulator, documented as such and used only when asked for (demo, tests, benchmarks). A world (a JSON
data file under `worlds/`) defines a task: an input generator, public evals and a weak default policy, and hidden
rules that the simulated models obey. Public API (all cheap to import; the server and traffic load lazily):

- `start_server(world="support", *, seed=0, port=0, latency_ms=0, jitter_ms=0, error_rate=0.0, rate_limit=None,
  mode="thread", **knobs) -> SimServer`
- `world_evals(world)`, `default_policy(world)`, `generate_inputs(world, n, seed)`, `world_names()`
- `PRICES`: {model: {"input": $/Mtok, "output": $/Mtok}}
"""

from __future__ import annotations

from typing import Any

PRICES: dict[str, dict[str, float]] = {
    "sim-small": {"input": 0.15, "output": 0.60},
    "sim-large": {"input": 2.50, "output": 10.00},
    "sim-judge": {"input": 0.15, "output": 0.60},
    "sim-optimizer": {"input": 2.50, "output": 10.00},
    "sim-embed": {"input": 0.02, "output": 0.00},
}

__all__ = [
    "PRICES",
    "SimServer",
    "default_policy",
    "generate_inputs",
    "start_server",
    "world_evals",
    "world_names",
]


def start_server(world: str = "support", **kwargs: Any):
    """Start the simulator on a free loopback port; see `selfimprove.sim.server.start_server`."""
    from selfimprove.sim.server import start_server as _start

    return _start(world, **kwargs)


def __getattr__(name: str) -> Any:
    if name == "SimServer":
        from selfimprove.sim.server import SimServer

        return SimServer
    if name in ("world_evals", "default_policy", "world_names"):
        from selfimprove.sim import public

        return getattr(public, name)
    if name == "generate_inputs":
        from selfimprove.sim.inputs import generate_inputs

        return generate_inputs
    raise AttributeError(name)
