"""Packages fetched from the configured package index with its ordinary client (`pip download --no-deps`):
never installed, only unpacked. pip's own configuration (index, find-links, certificates) applies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from selfimprove.core.errors import SelfimproveError


def download(requirements: list[str] | tuple[str, ...], dest: Path) -> list[Path]:
    """Download each pinned requirement (no dependencies) into `dest`; returns the files, in requirement order.
    A requirement already downloaded there is not fetched again. Raises naming the package pip could not get."""
    dest.mkdir(parents=True, exist_ok=True)
    missing = [r for r in requirements if _downloaded(r, dest) is None]
    if missing:  # one pip run for all of them (pip starts once)
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
             *missing, "-d", str(dest)], capture_output=True, text=True, check=False)
        still = [r for r in missing if _downloaded(r, dest) is None]
        if result.returncode != 0 or still:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-5:])
            raise SelfimproveError(
                f"could not download {', '.join(still) or ', '.join(missing)} from the package index "
                f"(pip exit {result.returncode})" + (f":\n{tail}" if tail else ""),
                hint="check the package index configuration (pip config list) and the network")
    return [_downloaded(r, dest) for r in requirements]  # type: ignore[misc]


def _downloaded(requirement: str, dest: Path) -> Path | None:
    name, _, version = requirement.partition("==")
    stem = name.replace("-", "_").lower()
    for path in sorted(dest.iterdir()):
        lower = path.name.lower()
        if lower.startswith(f"{stem}-{version}") and lower.endswith((".whl", ".tar.gz")):
            return path
    return None
