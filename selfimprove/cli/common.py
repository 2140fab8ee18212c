"""Options every command shares, and how a command finds its target's config and workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

TargetOpt = Annotated[Optional[str], typer.Option(
    "--target", "-t", metavar="CFG", help="Target config file (TOML/JSON), or a target name resolved as configs/<name>.toml. "
    "Defaults to the only config in configs/.")]
SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", metavar="KEY=VALUE", help="Override a config key, e.g. --set evaluate.concurrency=8 (repeatable).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document (with a 'schema' field) on stdout.")]
RootOpt = Annotated[Path, typer.Option("--root", help="Workspace folder holding runs/, prompts/ and configs/.",
                                       envvar="SELFIMPROVE_ROOT")]
RunOpt = Annotated[Optional[str], typer.Option("--run", help="Run id or folder (default: the latest run).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Recompute even if this stage's key was already computed.")]
WaitOpt = Annotated[bool, typer.Option("--wait", help="Wait for another run of the target to finish instead of "
                                                      "failing at once.")]


def config_path(root: Path, target: str | None) -> Path:
    """Resolve --target: a file path, a name under configs/, or the only config there."""
    from selfimprove.core.errors import UsageError

    if target:
        direct = Path(target)
        if direct.suffix in (".toml", ".json") or direct.exists():
            return direct
        for ext in (".toml", ".json"):
            named = root / "configs" / f"{target}{ext}"
            if named.is_file():
                return named
        raise UsageError(f"no config for target '{target}' (looked for configs/{target}.toml and .json)",
                         hint=f"create one with `selfimprove init {target}`")
    found = sorted((root / "configs").glob("*.toml")) + sorted((root / "configs").glob("*.json"))
    found = [p for p in found if not p.stem.startswith("base")]
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError("no target config found in configs/", hint="create one with `selfimprove init NAME`")
    names = ", ".join(p.stem for p in found)
    raise UsageError(f"several targets in configs/ ({names}); choose one with --target")


def load_target(root: Path, target: str | None, overrides: list[str] | None):
    from selfimprove.config.load import load_config

    return load_config(config_path(root, target), overrides or [])
