"""`selfimprove sim`: the built-in simulator (an OpenAI-compatible server with simulated models) and a
production-traffic generator for demos and tests. It is a simulator: nothing else uses it unless asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(
    help="The built-in simulator: simulated task, judge and optimizer models behind an OpenAI-compatible API, "
    "and a generator of production-like traffic traced to Phoenix. For demos, tests and benchmarks only.",
    no_args_is_help=True,
)


def _parse_knobs(knob: list[str], config_json: Optional[str]) -> dict:
    knobs = json.loads(config_json) if config_json else {}
    for item in knob:
        if "=" not in item:
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--knob")
        k, v = item.split("=", 1)
        try:
            knobs[k.strip()] = json.loads(v)
        except ValueError:
            knobs[k.strip()] = v
    return knobs


@app.command()
def serve(
    world: str = typer.Option("support", help="World to simulate (support, routing)."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind."),
    port: int = typer.Option(0, help="Port (0: a free port)."),
    seed: int = typer.Option(0, help="Seed of every simulated choice and fault."),
    latency_ms: float = typer.Option(0.0, help="Added latency per response, in ms."),
    jitter_ms: float = typer.Option(0.0, help="Uniform jitter around the latency, in ms."),
    error_rate: float = typer.Option(0.0, help="Fraction of requests answered with HTTP 500."),
    rate_limit: Optional[float] = typer.Option(None, help="Requests per second; above it, 429 with Retry-After."),
    knob: list[str] = typer.Option([], help="Other knob as KEY=VALUE (JSON value), e.g. throttle_rate=0.1, "
                                   "drop_rate=0.05, judge_error_rate=0.1, gullible=true. Repeatable."),
    config_json: Optional[str] = typer.Option(None, hidden=True, help="All knobs as one JSON object."),
) -> None:
    """Serve the simulator; prints its base_url (for OpenAI(base_url=…)) and runs until Ctrl-C."""
    from selfimprove.sim.faults import SimConfig
    from selfimprove.sim.server import serve as bind

    config = SimConfig()
    try:
        config.update(**_parse_knobs(knob, config_json))
        config.update(seed=seed, latency_ms=latency_ms, jitter_ms=jitter_ms, error_rate=error_rate,
                      rate_limit=rate_limit) if config_json is None else None
        httpd = bind(world, config, host, port)
    except (ValueError, KeyError) as e:
        raise typer.BadParameter(str(e)) from None
    print(f"http://{host}:{httpd.server_address[1]}/v1", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


@app.command()
def traffic(
    world: str = typer.Option("support", help="World to simulate."),
    n: int = typer.Option(100, help="Number of production calls to send."),
    phoenix: str = typer.Option(..., help="Phoenix base URL, e.g. http://127.0.0.1:6006."),
    project: str = typer.Option(..., help="Phoenix project to trace into."),
    policy: Optional[Path] = typer.Option(None, help="JSON file {system_prompt, model, temperature}; "
                                          "default: the world's weak default policy."),
    seed: int = typer.Option(0, help="Seed of the inputs and the simulator."),
    sim_url: Optional[str] = typer.Option(None, help="Base URL of a running simulator (default: start one)."),
    evals: bool = typer.Option(True, help="Run the world's evals and log them as span annotations."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Send N production-like calls through the openai SDK, traced to Phoenix, then judge them and log the evals."""
    from selfimprove.sim.traffic import make_traffic

    pol = None
    if policy is not None:
        data = json.loads(policy.read_text("utf-8"))
        pol = data.get("policy", data)
    server = None
    if sim_url is None:
        from selfimprove.sim import start_server

        server = start_server(world, seed=seed)
        sim_url = server.base_url
    try:
        summary = make_traffic(world, n, phoenix_url=phoenix, project=project, sim_base_url=sim_url, policy=pol,
                               seed=seed, evals=evals)
    finally:
        if server is not None:
            server.stop()
    if as_json:
        print(json.dumps({"schema": "selfimprove.sim.traffic/v1", **summary}, sort_keys=True))
    else:
        scores = ", ".join(f"{k}={v:.2f}" for k, v in sorted(summary.get("scores", {}).items()))
        typer.echo(f"sent {summary['calls']} calls to project {project!r}; {scores}", err=True)
