"""The `selfimprove` command: a thin Typer shell over the library (selfimprove.stages and selfimprove.store).

Only typer is imported at start-up; every command imports what it needs when it runs.
"""

from __future__ import annotations

import typer

from selfimprove.cli import (
    builds_cmd,
    evaluate_cmd,
    experiment_cmd,
    export_cmd,
    guidelines_cmd,
    local_model_cmd,
    loop_cmd,
    phoenix_cmd,
    power_cmd,
    promote_cmd,
    pull_cmd,
    rollout_cmd,
    store_cmds,
    update_cmd,
)

app = typer.Typer(
    name="selfimprove",
    help="Self-improving LLM calls: pull traces and judge feedback from Phoenix, learn a better prompt, prove it "
    "on held-out data, promote it as a versioned build.\n\n"
    "The loop: pull → snapshot → update → evaluate → promote (or `run` for all of it).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

app.command("pull")(pull_cmd.pull)
app.command("snapshot")(pull_cmd.snapshot)
app.command("update")(update_cmd.update)
app.command("evaluate")(evaluate_cmd.evaluate)
app.command("experiment")(experiment_cmd.experiment)
app.command("experiments")(experiment_cmd.experiments)
app.command("guidelines")(guidelines_cmd.guidelines)
app.command("export")(export_cmd.export)
app.command("promote")(promote_cmd.promote)
app.command("power")(power_cmd.power)
app.command("init")(store_cmds.init)
app.command("log")(store_cmds.log)
app.command("verify")(store_cmds.verify)
app.command("diff")(builds_cmd.diff)
app.command("show")(builds_cmd.show)
app.command("run")(loop_cmd.run)
app.command("demo")(loop_cmd.demo)
app.add_typer(local_model_cmd.app, name="local-model", help="A REAL small language model on this machine: "
              "llama.cpp's llama-server with Qwen2.5-Coder 0.5B/1.5B or SmolLM2 from the package registry, on "
              "loopback with an OpenAI-compatible API (no key).")
app.add_typer(rollout_cmd.app, name="rollout", help="Serve a build to a share of production traffic, measure it "
              "online, then promote it or roll it back (start, status, stop).")
app.add_typer(phoenix_cmd.app, name="phoenix", help="A local Phoenix server (sqlite on disk, loopback only) for trying "
              "selfimprove without one of your own.")


def _register_optional() -> None:
    """Sub-apps whose modules may be absent in a partial install (kept light at import)."""
    try:
        from selfimprove.cli import sim as sim_cli
    except ImportError:
        return
    app.add_typer(sim_cli.app, name="sim", help="The built-in simulator: an OpenAI-compatible simulated world "
                  "for demos, tests and benchmarks (never a real model).")


_register_optional()


def _print_version(value: bool) -> None:
    if value:
        from selfimprove import __version__

        typer.echo(__version__)
        raise typer.Exit(0)


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Self-improving LLM calls."""


def main() -> None:
    """The console script. With --json, a usage error Click finds while parsing (an unknown flag, a bad value) is
    one JSON document on stdout too, like every other failure; the usual message still goes to stderr."""
    import sys

    from typer.exceptions import TyperException

    try:
        code = app(standalone_mode=False)
    except TyperException as exc:  # Click's usage errors (BadParameter, NoSuchOption, ...)
        if "--json" in sys.argv[1:]:
            from selfimprove.cli.output import usage_error_document

            usage_error_document(exc.format_message(), getattr(exc, "exit_code", 2))
        exc.show()
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Abort:
        sys.stderr.write("Aborted!\n")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
