"""`selfimprove sim`: the built-in simulator (an OpenAI-compatible server with simulated models) and a
production-traffic generator for demos and tests. It is a simulator: nothing else uses it unless asked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from selfimprove.cli.common import JsonOpt
from selfimprove.cli.output import handle_errors, json_flag

app = typer.Typer(
    help="The built-in simulator: simulated task, judge and optimizer models behind an OpenAI-compatible API, "
    "and a generator of production-like traffic traced to Phoenix. For demos, tests and benchmarks only.",
    no_args_is_help=True,
)

WorldOpt = Annotated[str, typer.Option(help="World to simulate: support (customer-support replies) or routing "
                                            "(ticket labels).")]
SeedOpt = Annotated[int, typer.Option(help="Seed of every simulated choice (and of the inputs, for traffic).")]


def _parse_knobs(knob: list[str], config_json: str | None) -> dict[str, Any]:
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
    world: WorldOpt = "support",
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: a free port).")] = 0,
    seed: SeedOpt = 0,
    latency_ms: Annotated[float, typer.Option(help="Added latency per response, in ms.")] = 0.0,
    jitter_ms: Annotated[float, typer.Option(help="Uniform jitter around the latency, in ms.")] = 0.0,
    error_rate: Annotated[float, typer.Option(help="Fraction of requests answered with HTTP 500.")] = 0.0,
    rate_limit: Annotated[float | None, typer.Option(
        help="Requests per second; above it, 429 with Retry-After.")] = None,
    knob: Annotated[list[str] | None, typer.Option(
        metavar="KEY=VALUE", help="Another knob (JSON value), repeatable: throttle_rate, retry_after_s, drop_rate, "
        "slow_rate, slow_ms, fault_models, judge_error_rate, judge_rejects_response_format, optimizer_vague, "
        "optimizer_drop, optimizer_filler, gullible, batch_delay_s, batch_error_rate, batch_expire_rate, batch_fail.")] = None,
    config_json: Annotated[str | None, typer.Option(hidden=True, help="Every knob as one JSON object.")] = None,
    json_output: Annotated[bool, typer.Option("--json", callback=json_flag, help="Print one JSON line {schema: selfimprove.sim.serve/1, "
                                                             "base_url, world, seed, pid} instead of the bare "
                                                             "base_url.")] = False,
) -> None:
    """Serve the simulator: prints its base_url (for OpenAI(base_url=...)) on stdout as soon as it is up and runs
    until Ctrl-C (or SIGTERM)."""
    from selfimprove.sim.faults import SimConfig
    from selfimprove.sim.server import serve as bind

    config = SimConfig()
    try:
        if config_json is None:  # --config-json (used by start_server(mode="subprocess")) carries every knob
            config.update(seed=seed, latency_ms=latency_ms, jitter_ms=jitter_ms, error_rate=error_rate,
                          rate_limit=rate_limit)
        config.update(**_parse_knobs(knob or [], config_json))
        httpd = bind(world, config, host, port)
    except (ValueError, KeyError) as e:
        raise typer.BadParameter(str(e)) from None
    base_url = f"http://{host}:{httpd.server_address[1]}/v1"
    if json_output:
        import os

        print(json.dumps({"schema": "selfimprove.sim.serve/1", "base_url": base_url, "world": world,
                          "seed": config.seed, "pid": os.getpid()}), flush=True)
    else:
        print(base_url, flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


@app.command()
@handle_errors
def traffic(
    phoenix: Annotated[str, typer.Option(help="Phoenix base URL, e.g. http://127.0.0.1:6006.")],
    project: Annotated[str, typer.Option(help="Phoenix project to trace into.")],
    world: WorldOpt = "support",
    n: Annotated[int, typer.Option("--n", help="Number of production calls to send.", min=1)] = 100,
    policy: Annotated[Path | None, typer.Option(
        help="JSON file {system_prompt, model, temperature} (or {policy: {...}}); default: the world's weak "
        "default policy.")] = None,
    seed: SeedOpt = 0,
    sim_url: Annotated[str | None, typer.Option(
        help="Base URL of a running simulator (default: start one for this command).")] = None,
    evals: Annotated[bool, typer.Option(help="Judge the calls with the world's evals and log span annotations.")] = True,
    chain: Annotated[bool, typer.Option(help="Trace each call under an AGENT root and a CHAIN parent span, as an "
                                             "agent or chain app does.")] = False,
    eval_on: Annotated[str, typer.Option(help="Where the evals are logged: span, parent, root (need --chain) or "
                                              "trace (Phoenix trace annotations; needs --chain).")] = "span",
    humans: Annotated[float, typer.Option(help="Share of judged calls simulated people also review "
                                               "(annotator_kind HUMAN).", min=0, max=1)] = 0.0,
    human_flip: Annotated[float, typer.Option(help="Share of those reviews that disagree with the judge.",
                                              min=0, max=1)] = 0.0,
    json_output: JsonOpt = False,
) -> None:
    """Send N production-like calls through the openai SDK, traced to Phoenix, then judge them with phoenix-evals
    and log the verdicts as span annotations (each carrying its eval spec). --chain, --eval-on, --humans and
    --human-flip make the shapes of agent and chain apps with people's reviews."""
    from selfimprove.cli.output import emit
    from selfimprove.core.errors import UsageError
    from selfimprove.sim.traffic import make_traffic

    pol = None
    if policy is not None:
        try:
            data = json.loads(policy.read_text("utf-8"))
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read policy file {policy}: {e}", hint="pass a JSON object") from None
        pol = data.get("policy", data)
    server = None
    if sim_url is None:
        from selfimprove.sim import start_server

        server = start_server(world, seed=seed)
        sim_url = server.base_url
    try:
        summary = make_traffic(world, n, phoenix_url=phoenix, project=project, sim_base_url=sim_url, policy=pol,
                               seed=seed, evals=evals, chain=chain, eval_on=eval_on, humans=humans,
                               human_flip=human_flip)
    finally:
        if server is not None:
            server.stop()

    def render(console: Any) -> None:
        scores = ", ".join(f"{k} {v:.2f}" for k, v in sorted(summary["scores"].items())) or "not judged"
        console.print(f"Sent {summary['spans']} of {summary['calls']} calls to project {project!r} "
                      f"({summary['errors']} failed); mean scores: {scores}", markup=False)

    emit("selfimprove.sim.traffic/v1", summary, json_mode=json_output, render=render)


if __name__ == "__main__":  # `python -m selfimprove.cli.sim serve …`: how the simulator runs as a subprocess
    app(prog_name="python -m selfimprove.cli.sim")
