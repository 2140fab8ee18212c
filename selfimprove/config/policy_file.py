"""A policy written by hand: a TOML or JSON file in the `Policy` shape, and `KEY=VALUE` overrides on any policy.

The file holds the policy's fields at the top level (`system_prompt`, `model`, `temperature`, ...), or is a
document that carries one under `policy` (a candidate or a build file), so any policy selfimprove wrote can be
copied and edited. Overrides use `--set`'s syntax (`temperature=0.2`, `max_tokens=200`): the value is a TOML
literal, else a plain string. A file or an override that does not make a valid policy raises ConfigError naming
the file, the key and what was found.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from selfimprove.config.load import apply_overrides, read_config_file
from selfimprove.core.errors import ConfigError, UsageError
from selfimprove.core.records import Policy


def read_policy_file(path: str | Path) -> dict[str, Any]:
    """The policy fields a TOML or JSON file holds (its `policy` table when it has one)."""
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise UsageError(f"{path}: a policy file is .toml or .json",
                         hint="write the Policy fields (system_prompt, model, temperature, ...) in TOML or JSON")
    if not path.is_file():
        raise UsageError(f"policy file not found: {path}")
    data = read_config_file(path)
    inner = data.get("policy")
    return dict(inner) if isinstance(inner, dict) else data


def with_overrides(policy: Policy, overrides: list[str] | tuple[str, ...], source: str) -> Policy:
    """`policy` with `KEY=VALUE` overrides applied (unchanged without any)."""
    if not overrides:
        return policy
    return policy_from_dict(apply_overrides(policy.model_dump(mode="json"), list(overrides)),
                            f"{source} with {', '.join(overrides)}")


def policy_from_dict(data: dict[str, Any], source: str) -> Policy:
    data = {k: v for k, v in data.items() if k not in ("schema", "digest")}
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(e) for e in exc.errors()]
        raise ConfigError(f"{source}: not a valid policy\n  " + "\n  ".join(lines),
                          hint="a policy has system_prompt and model, and optionally temperature, top_p, "
                               "max_tokens, response_format, tools, few_shot") from None


def load_policy(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Policy:
    return with_overrides(policy_from_dict(read_policy_file(path), str(path)), overrides, str(path))


def _describe(error: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in error["loc"]) or "(top level)"
    if error["type"] == "extra_forbidden":
        return f"key '{key}': not a policy field"
    if error["type"] == "missing":
        return f"key '{key}': required, not found"
    return f"key '{key}': {error['msg']}, found {error.get('input')!r}"
