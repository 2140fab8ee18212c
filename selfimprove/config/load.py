"""Load a target config: TOML or JSON, `extends` inheritance, `--set key.sub=value` overrides.

`extends` is resolved relative to the file that names it; a cycle is refused. Overrides apply after inheritance.
A bad config raises ConfigError naming the file, the key, what was expected and what was found.
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from selfimprove.config.models import ENV_NAME_ERROR, TargetConfig
from selfimprove.core.errors import ConfigError, UsageError
from selfimprove.core.secrets import redact


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse one TOML or JSON file into a dict (no inheritance)."""
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}", hint="create one with `selfimprove init TARGET`")
    text = path.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'TOML'}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table at the top level, found {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` wins; tables merge key by key, everything else (lists included) is replaced."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_extends(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The merged dict of `path` and everything it extends, nearest file last (so it wins)."""
    path = path.resolve()
    if path in _seen:
        chain = " -> ".join(str(p) for p in (*_seen, path))
        raise ConfigError(f"config inheritance cycle: {chain}", hint="remove one of the `extends` keys")
    data = read_config_file(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: key 'extends': expected a file path string, found {parent!r}")
    base = resolve_extends((path.parent / parent), (*_seen, path))
    return deep_merge(base, data)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b=value` → (["a", "b"], value); the value is read as a TOML literal, else as a plain string."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY.SUB=VALUE")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return [k.strip() for k in key.split(".")], value


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    for item in overrides:
        keys, value = parse_override(item)
        patch: dict[str, Any] = {keys[-1]: value}
        for k in reversed(keys[:-1]):
            patch = {k: patch}
        data = deep_merge(data, patch)
    return data


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    found = error.get("input")
    if error["loc"] and error["loc"][-1] == "api_key_env" and isinstance(found, str):
        return f"key '{key}': {ENV_NAME_ERROR}, found {redact(found)}"  # a pasted key is never echoed
    if error["type"] == "extra_forbidden":
        return f"key '{key}': unknown key (found {found!r})"
    if error["type"] == "missing":
        return f"key '{key}': required, not found"
    return f"key '{key}': {error['msg']}, found {found!r}"


def validate_config(data: dict[str, Any], source: str) -> TargetConfig:
    try:
        return TargetConfig.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError(
            f"{source}: invalid config\n  " + "\n  ".join(lines),
            hint="see `selfimprove init --help` for a commented example",
        ) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> TargetConfig:
    """Read `path` with its `extends` chain, apply `--set` overrides, validate."""
    path = Path(path)
    data = apply_overrides(resolve_extends(path), list(overrides or []))
    data.setdefault("target", path.stem)
    return validate_config(data, str(path))


def config_path(root: Path, target: str | None) -> Path:
    """Resolve --target: a file path, a name under configs/, or the only config there."""
    if target:
        direct = Path(target)
        if direct.suffix in (".toml", ".json") or direct.is_file():  # a folder named like the target is not it
            return direct
        for ext in (".toml", ".json"):
            named = root / "configs" / f"{target}{ext}"
            if named.is_file():
                return named
        raise UsageError(f"no config for target '{target}' (looked for configs/{target}.toml and .json)",
                         hint=f"create one with `selfimprove init {target}`")
    found = target_configs(root)
    if len(found) == 1:
        return found[0]
    if not found:
        raise UsageError("no target config found in configs/", hint="create one with `selfimprove init NAME`")
    names = ", ".join(p.stem for p in found)
    raise UsageError(f"several targets in configs/ ({names})", hint="choose one with --target NAME")


def target_configs(root: Path) -> list[Path]:
    """The target configs under `<root>/configs/` (`*.toml`, then `*.json`), without the `base*` files others
    extend."""
    found = sorted((root / "configs").glob("*.toml")) + sorted((root / "configs").glob("*.json"))
    return [p for p in found if not p.stem.startswith("base")]


def load_target(root: str | Path, target: str | None, overrides: list[str] | None) -> TargetConfig:
    """The config of `target` (a path or a name under <root>/configs/) with `--set` overrides applied."""
    return load_config(config_path(Path(root), target), overrides or [])
