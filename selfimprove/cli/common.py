"""Options every command shares, and how a command finds its target's config and workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

TargetOpt = Annotated[str | None, typer.Option(
    "--target", "-t", metavar="CFG", help="Target config file (TOML/JSON), or a target name resolved as configs/<name>.toml. "
    "Defaults to the only config in configs/.")]
SetOpt = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE", help="Override a config key, e.g. --set evaluate.concurrency=8 (repeatable).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document (with a 'schema' field) on stdout.")]
RootOpt = Annotated[Path, typer.Option("--root", help="Workspace folder holding runs/, prompts/ and configs/.",
                                       envvar="SELFIMPROVE_ROOT")]
RunOpt = Annotated[str | None, typer.Option("--run", help="Run id or folder (default: the latest run).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Recompute even if this stage's key was already computed.")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for another run of the target to finish instead of "
                                                      "failing at once.")]


def config_path(root: Path, target: str | None) -> Path:
    """Resolve --target (see selfimprove.config.load.config_path); imported lazily to keep start-up light."""
    from selfimprove.config.load import config_path as resolve

    return resolve(root, target)


def load_target(root: Path, target: str | None, overrides: list[str] | None):
    """The target's config with overrides (see selfimprove.config.load.load_target); imported lazily."""
    from selfimprove.config.load import load_target as load

    return load(root, target, overrides)
