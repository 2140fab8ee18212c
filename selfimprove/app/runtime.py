"""The runtime twin of promotion: an app loads the production build's chat-completion arguments at start-up.

    import openai, selfimprove
    args = selfimprove.load_policy("support")               # {"model", "messages": [system…], "temperature", …}
    reply = openai.OpenAI().chat.completions.create(**{**args, "messages": args["messages"] + history})

So a promotion (or a rollback) reaches the app without a code change. `source="local"` reads
`<root>/prompts/<target>/production.ref.json` and the build it names (digest-checked); `source="phoenix"` reads
the Phoenix prompt version tagged `production` (pushed with `promote --push-phoenix`). Light: importing this
module loads no heavy library; the Phoenix client is imported only for source="phoenix".
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from selfimprove.core.errors import UsageError


def fill_variables(text: str, variables: dict[str, str] | None) -> str:
    """Replace `{{ name }}` and `{name}` for the given names only; other braces are left alone."""
    for name, value in (variables or {}).items():
        pattern = r"\{\{\s*" + re.escape(name) + r"\s*\}\}|\{" + re.escape(name) + r"\}"
        text = re.sub(pattern, lambda _m, v=value: str(v), text)
    return text


def load_build(target: str, *, root: str | Path = ".", ref: str = "production"):
    """The Build the ref points at (IntegrityError if the file does not match its digest)."""
    from selfimprove.store.builds import production
    from selfimprove.store.runs import Workspace

    build = production(Workspace(root).prompts_dir, target, ref)
    if build is None:
        raise UsageError(f"target '{target}' has no '{ref}' build in {Path(root) / 'prompts' / target}",
                         hint="promote a candidate first (`selfimprove promote`)")
    return build


def load_policy(target: str, *, root: str | Path = ".", source: Literal["local", "phoenix"] = "local",
                ref: str = "production", variables: dict[str, str] | None = None,
                endpoint: str | None = None, prompt: str | None = None,
                api_key_env: str | None = None, key: str | None = None, ttl: float | None = None) -> dict[str, Any]:
    """The production build's chat-completion arguments: `{"model", "messages": [system, *few-shot], ...}`.

    Local builds are served through a per-process cache (app/serving.py): the files are re-checked at most once
    per `ttl` seconds (default 5; 0 re-checks on every call), a call after the first load costs microseconds,
    and once a build was served a damaged or missing file never raises here: the last known good build keeps
    being served and the failure is logged once. Under an active rollout (`selfimprove rollout start`) the call
    is served an arm: the same arm for the same `key` (a user or session id: sticky), by the rollout's shares
    otherwise. The result is a `ServedArgs` (a dict) whose `.build`, `.arm`, `.rollout` and `.metadata` say what
    was served; `serve()` also records it on the traced call, so `rollout status` can attribute its outcome.

    `variables` renders the system prompt: a build whose policy is a template (`template_format` F_STRING or
    MUSTACHE, kept from the production template it was learned from) is rendered in its format, strictly (a
    UsageError names any missing variable: a literal placeholder is never returned when variables are given);
    without `variables` the template comes back unrendered. A plain build's `{name}`/`{{ name }}` are filled
    for the given names only. For `source="phoenix"`, `endpoint` (default: the
    target's config `telemetry.phoenix.endpoint`, else http://127.0.0.1:6006), `prompt` (default: the target's
    name made identifier-safe) and `api_key_env` (the *name* of the variable holding the key) say where to look.
    Returns a fresh dict each call.
    """
    if source == "local":
        from selfimprove.app.serving import DEFAULT_TTL, served_target
        from selfimprove.telemetry.phoenix_prompts import openai_arguments

        args = served_target(root, target, ref).serve(None if key is None else str(key),
                                                      DEFAULT_TTL if ttl is None else ttl)
        policy = args.policy
        if policy.template_format is not None and variables is not None:
            return args.replaced(openai_arguments(policy, _render(policy, variables)))
        if not variables:
            return args
    elif key is not None:
        raise UsageError("load_policy(key=...) serves rollouts of local builds only (source='local')")
    elif source == "phoenix":
        from selfimprove.telemetry.phoenix_prompts import client, fetch_tagged, prompt_name

        endpoint, api_key_env = _phoenix_settings(target, root, endpoint, api_key_env)
        args, rendered = fetch_tagged(client(endpoint, api_key_env), prompt or prompt_name(target), tag=ref,
                                      variables=variables)
        if rendered:
            return args  # by the prompt version's own template format
    else:
        raise UsageError(f"source must be 'local' or 'phoenix', not {source!r}")
    if variables:
        args["messages"] = [dict(m, content=fill_variables(m["content"], variables))
                            if m.get("role") in ("system", "developer") and isinstance(m.get("content"), str) else m
                            for m in args["messages"]]
    return args


def _render(policy: Any, variables: dict[str, Any]) -> str:
    from selfimprove.core.templates import TemplateError

    try:
        return policy.system_for(variables)
    except TemplateError as exc:
        raise UsageError(f"cannot render the production prompt: {exc}",
                         hint="pass every template variable: " + ", ".join(sorted(policy.variables))) from exc


def _phoenix_settings(target: str, root: str | Path, endpoint: str | None,
                      api_key_env: str | None) -> tuple[str, str | None]:
    if endpoint is not None:
        return endpoint, api_key_env
    for ext in (".toml", ".json"):
        path = Path(root) / "configs" / f"{target}{ext}"
        if path.is_file():
            from selfimprove.config.load import load_config

            px = load_config(path).telemetry.phoenix
            return px.endpoint, api_key_env or px.api_key_env
    return "http://127.0.0.1:6006", api_key_env


@contextlib.contextmanager
def serve(target: str, *, key: str | None = None, variables: dict[str, str] | None = None,
          **options: Any) -> Iterator[dict[str, Any]]:
    """`load_policy(target, key=..., variables=...)` whose LLM calls made inside are tagged with what was served:
    span metadata `selfimprove.build` (and under a rollout `selfimprove.rollout`, `selfimprove.arm` and
    `selfimprove.key`), merged into any OpenInference metadata already in context, plus the policy tag
    (`tag_policy`). `pull` then attributes each judged call to its build and arm.

        with selfimprove.serve("support", key=user_id) as args:
            client.chat.completions.create(**{**args, "messages": args["messages"] + history})
    """
    from selfimprove.app.instrument import tag_policy

    args = load_policy(target, key=key, variables=variables, **options)
    with tag_policy(args.policy, variables, metadata=args.metadata):
        yield args
