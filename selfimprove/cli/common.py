"""Options every command shares, and how a command finds its target's config and workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from selfimprove.cli.output import json_flag

TargetOpt = Annotated[str | None, typer.Option(
    "--target", "-t", metavar="CFG", help="Target config file (TOML/JSON), or a target name resolved as configs/<name>.toml. "
    "Defaults to the only config in configs/.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE", help="Override a config key, e.g. --set evaluate.concurrency=8 (repeatable).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document (with a 'schema' field) on stdout.",
                                        callback=json_flag)]
RootOpt = Annotated[Path, typer.Option("--root", help="Workspace folder holding runs/, prompts/ and configs/.",
                                       envvar="SELFIMPROVE_ROOT")]
RunOpt = Annotated[str | None, typer.Option("--run", help="Run id or folder (default: the latest run).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Recompute even if this stage's key was already computed.")]
ForkOpt = Annotated[bool, typer.Option("--fork", help="Run this stage in a new run that starts from the run's "
                                      "earlier stages (copied) and names it as its origin: the way to re-run a stage "
                                      "of a run a build was promoted from (such a run is sealed).")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for another run of the target to finish instead of "
                                                      "failing at once.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before spending (for cron).")]
BatchOpt = Annotated[bool | None, typer.Option(
    "--batch/--no-batch", help="Send replays and judge calls through the provider's Batch API: half price, "
    "asynchronous (a batch may take hours), resumable (docs/batch.md); default: config llm.batch.enabled.")]


def resolve_target(root: Path, target: str | None, overrides: list[str] | None = None):
    """(target name, its config or None) for commands that read builds and runs and need no config of their own:
    the config's target when there is one (a config that does not validate is an error), else --target's own
    name when it has runs or builds (else a usage error, so a typo in CI fails), else the only target under
    prompts/."""
    from selfimprove.config.load import config_path
    from selfimprove.config.load import load_target as load
    from selfimprove.core.errors import ConfigError, UsageError

    try:
        cfg = load(root, target, overrides)
        return cfg.target, cfg
    except ConfigError:
        raise
    except UsageError:
        if target:
            name = Path(target).stem
            if not any((root / folder / name).is_dir() for folder in ("runs", "prompts")):
                known = sorted({p.name for folder in ("runs", "prompts") if (root / folder).is_dir()
                                for p in (root / folder).iterdir() if p.is_dir()})
                raise UsageError(f"unknown target '{name}': no config, no runs and no builds under {root}",
                                 hint=f"targets here: {', '.join(known)}" if known else
                                 "check --target and --root") from None
            return name, None
        prompts = root / "prompts"
        found = sorted(p.name for p in prompts.iterdir() if p.is_dir()) if prompts.is_dir() else []
        if len(found) == 1:
            return found[0], None
        config_path(root, target)  # raises the usual "no target config" error
        raise


def gate_overrides(overrides: list[str] | None, max_failed_pairs: float | None) -> list[str]:
    """`--set` overrides plus the gate flags that are config keys (a flag wins over the config)."""
    extra = [f"gate.max_failed_pairs={max_failed_pairs}"] if max_failed_pairs is not None else []
    return [*(overrides or []), *extra]
