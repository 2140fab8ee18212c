"""`init`, `log` and `verify`: commands over the workspace itself."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selfimprove.cli.common import JsonOpt, RootOpt, TargetOpt, resolve_target
from selfimprove.cli.output import emit, handle_errors


@handle_errors
def init(
    name: Annotated[str, typer.Argument(help="Name of the new target (one LLM call site).")],
    source: Annotated[str, typer.Option(help="Telemetry source: phoenix, arize or file.")] = "phoenix",
    endpoint: Annotated[str, typer.Option(help="Phoenix base URL.")] = "http://127.0.0.1:6006",
    project: Annotated[str | None, typer.Option(help="Phoenix project (default: the target name).")] = None,
    base_url: Annotated[str | None, typer.Option(
        help="OpenAI-compatible endpoint for the task, optimizer and judge calls (a gateway, vLLM, the simulator: "
        "see `selfimprove sim serve`). Default: OpenAI.")] = None,
    api_key_env: Annotated[str, typer.Option(
        help="NAME of the environment variable holding the endpoint's key (never the key).")] = "OPENAI_API_KEY",
    optimizer_model: Annotated[str, typer.Option(help="Model that writes the prompt edits.")] = "gpt-4.1",
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing config.")] = False,
    root: RootOpt = Path("."),
    json_output: JsonOpt = False,
) -> None:
    """Write a commented config for a new target to configs/NAME.toml."""
    import tomllib

    from selfimprove.cli.init_template import render_config
    from selfimprove.config.load import validate_config
    from selfimprove.core.errors import UsageError
    from selfimprove.store.atomic import write_text

    if source not in ("phoenix", "arize", "file"):
        raise UsageError(f"--source must be phoenix, arize or file, not {source!r}")
    path = root / "configs" / f"{name}.toml"
    if path.exists() and not force:
        raise UsageError(f"{path} already exists", hint="pass --force to overwrite it")
    text = render_config(target=name, source=source, endpoint=endpoint, project=project or name,
                         base_url=base_url, api_key_env=api_key_env, optimizer_model=optimizer_model)
    try:  # validated before anything is written: a refused name or option leaves no file behind
        validate_config(tomllib.loads(text), str(path))
    except tomllib.TOMLDecodeError:
        raise UsageError(f"cannot write a config for {name!r}: the name or an option breaks the TOML",
                         hint="use a name of letters, digits, '-', '_' or '.'") from None
    write_text(path, text)
    emit("selfimprove.init/1", {"target": name, "config": str(path)}, json_mode=json_output,
         render=lambda c: c.print(f"Wrote {path}. Edit it, then run `selfimprove pull --target {name}`."))


@handle_errors
def log(
    target: TargetOpt = None,
    root: RootOpt = Path("."),
    json_output: JsonOpt = False,
) -> None:
    """Show the chain of runs and builds of a target, with their stages and scores."""
    from selfimprove.stages.history import target_history

    history = target_history(root, resolve_target(root, target)[0])
    emit("selfimprove.log/1", history, json_mode=json_output, render=lambda c: _render_log(c, history), product=True)


def _render_log(c, history: dict) -> None:
    from rich.table import Table
    from rich.text import Text as plain  # paths and messages are never markup

    builds = Table(title=f"Builds of {history['target']}")
    for col in ("build", "parent", "run", "primary eval", "Δ", "95% CI", "production"):
        builds.add_column(col)
    for b in history["builds"]:
        if b.get("error"):
            builds.add_row(b["name"], plain("DAMAGED: " + b["error"]), "", "", "", "", "")
            continue
        ci = b.get("ci")
        builds.add_row(b["name"], b.get("parent") or "-", b.get("run") or "-", b.get("primary") or "-",
                       f"{b['delta']:+.3f}" if b.get("delta") is not None else "-",
                       f"[{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "-", "◀" if b["production"] else "")
    runs = Table(title="Runs")
    for col in ("run", "created", "stages", "parent build"):
        runs.add_column(col)
    for r in history["runs"]:
        if r.get("error"):
            runs.add_row(r["run"], "-", plain("DAMAGED: " + r["error"]), "-")
            continue
        stages = " → ".join(r["stages"]) or "-"
        if r.get("forked_from"):
            stages = f"(fork of {r['forked_from']}) {stages}"
        if r.get("superseded"):
            stages += f" (superseded: {', '.join(r['superseded'])})"
        runs.add_row(r["run"], r.get("created_at") or "-", plain(stages), r.get("parent_build") or "-")
    c.print(builds)
    c.print(runs)
    if history.get("production_error"):
        c.print(plain(f"production ref DAMAGED: {history['production_error']}"))
    if any(x.get("error") for x in history["builds"] + history["runs"]):
        c.print("`selfimprove verify` checks everything and names the first damaged file.")


@handle_errors
def verify(
    run: Annotated[str | None, typer.Argument(help="Run id or folder. Default: every run and build of the "
                                                      "target.")] = None,
    target: TargetOpt = None,
    root: RootOpt = Path("."),
    json_output: JsonOpt = False,
) -> None:
    """Re-derive every digest of a run (or of all runs, builds and refs of a target) and check how they bind.

    Checks each run's manifest, stage records and outputs; each build's chain, the run manifest it recorded and
    its evidence (report, candidate) by digest; each ref and the ref log; the rollout document and its log of
    revisions (chain, digests, the builds its arms serve). Exits 4 naming the first file that does
    not match, 2 for a target that has no config, runs or builds.
    """
    from selfimprove.store.runs import Workspace
    from selfimprove.store.verify import verify_run, verify_target

    ws = Workspace(root)
    if run and (Path(run) / "manifest.json").is_file():
        the_run = ws.open_run("", run)
        result = {"target": the_run.target, "ok": True, "runs": [verify_run(the_run)], "builds": [], "refs": []}
    else:
        name, _ = resolve_target(root, target)  # an unknown target is a usage error there (exit 2)
        if run:
            result = {"target": name, "ok": True, "runs": [verify_run(ws.open_run(name, run))], "builds": [],
                      "refs": []}
        else:
            result = verify_target(ws, name)
    checked = result["runs"]
    emit("selfimprove.verify/1", result, json_mode=json_output, render=lambda c: c.print(
        f"OK: {len(checked)} run(s), {sum(r['files'] for r in checked)} artifact(s), {len(result['builds'])} "
        f"build(s), {len(result['refs'])} ref(s)"
        + (f", {result['rollout']['revisions']} rollout revision(s)" if result.get("rollout") else "")
        + " verified.", markup=False))
