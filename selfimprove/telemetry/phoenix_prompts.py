"""Builds in Phoenix prompt management: push a build as a prompt version and move its tag; read the tagged one.

A build's policy becomes an OpenAI-shaped prompt version (system prompt and few-shot messages, model and
invocation parameters) under a prompt named after the target; its description names the build and its digest so
the Phoenix UI shows where it came from. Creating a tag that already exists on another version moves it
(notes/phoenix-api.md §7), so `production` always names exactly one version.

Template syntax: a policy that is a template keeps its format (F_STRING or MUSTACHE, as the production template
it was learned from); a plain policy whose prompt has `{{variable}}` is pushed as MUSTACHE, anything else as NONE,
so braces in plain prompts (JSON examples) are never read as variables.
"""

from __future__ import annotations

import os
import re
from typing import Any

from selfimprove.core.errors import SelfimproveError, UsageError
from selfimprove.core.records import Build, Policy

_MUSTACHE = re.compile(r"\{\{\s*[A-Za-z_][\w.]*\s*\}\}")


def prompt_name(target: str) -> str:
    """A Phoenix prompt identifier for a target (letters, digits, '-' and '_', starting alphanumeric)."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", target).strip("-_")
    return name or "selfimprove-target"


def openai_arguments(policy: Policy, system: str | None = None) -> dict[str, Any]:
    """The chat-completion arguments of a policy: `{"model", "messages": [system, *few-shot], ...params}`, with
    `system` (a rendering) in place of the system prompt when given."""
    messages = [{"role": "system", "content": policy.system_prompt if system is None else system}]
    messages += [m.to_openai() for m in policy.few_shot]
    return {**policy.params(), "messages": messages}


def template_format(policy: Policy) -> str:
    if policy.template_format is not None:
        return policy.template_format
    return "MUSTACHE" if _MUSTACHE.search(policy.system_prompt) else "NONE"


def client(endpoint: str, api_key_env: str | None = None) -> Any:
    from phoenix.client import Client

    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise UsageError(f"environment variable {api_key_env} is not set",
                             hint="export the Phoenix API key under that name, or drop api_key_env")
    return Client(base_url=endpoint.rstrip("/"), api_key=api_key)


def push_build(px: Any, build: Build, *, tag: str = "production", name: str | None = None,
               note: str = "") -> dict[str, Any]:
    """Create a prompt version for `build` and move `tag` to it. Returns `{prompt, version_id, tag}`."""
    import httpx
    from phoenix.client.types import PromptVersion

    name = name or prompt_name(build.target)
    description = f"selfimprove {build.name} {build.digest}" + (f" ({note})" if note else "")
    try:
        version = PromptVersion.from_openai(openai_arguments(build.policy),
                                            template_format=template_format(build.policy), description=description)
    except NotImplementedError as exc:  # e.g. response_format {"type": "json_object"}: Phoenix has no such field
        raise SelfimproveError(f"Phoenix prompts cannot hold {build.name}'s parameters "
                               f"(response_format={build.policy.response_format})",
                               hint="promote without --push-phoenix and load the build locally") from exc
    try:
        created = px.prompts.create(name=name, version=version,
                                    prompt_description=f"Managed by selfimprove (target {build.target})")
        px.prompts.tags.create(prompt_version_id=created.id, name=tag, description=description)
    except (httpx.HTTPError, ValueError) as exc:
        detail = getattr(getattr(exc, "response", None), "text", "") or str(exc)
        raise SelfimproveError(f"could not push {build.name} to Phoenix prompt '{name}': {detail[:300]}",
                               hint="check telemetry.phoenix.endpoint and that the server is up") from exc
    return {"prompt": name, "version_id": created.id, "tag": tag}


def fetch_tagged(px: Any, name: str, *, tag: str = "production",
                 variables: dict[str, Any] | None = None) -> tuple[dict[str, Any], bool]:
    """(the chat-completion arguments of the prompt version that carries `tag`, whether they are rendered).
    With `variables`, a F_STRING or MUSTACHE version is rendered in its own format (a UsageError names missing
    variables); otherwise, and for a NONE version, the template is left unfilled for the caller."""
    from phoenix.client.utils.template_formatters import NoOpFormatterBase, TemplateFormatterError

    try:
        version = px.prompts.get(prompt_identifier=name, tag=tag)
    except ValueError as exc:
        raise UsageError(f"Phoenix has no prompt '{name}' tagged '{tag}'",
                         hint="promote with --push-phoenix first, or use source='local'") from exc
    if variables is None or getattr(version, "_template_format", "MUSTACHE") == "NONE":
        return dict(version.format(formatter=NoOpFormatterBase())), False
    try:
        return dict(version.format(variables={k: str(v) for k, v in variables.items()})), True
    except TemplateFormatterError as exc:
        raise UsageError(f"cannot render Phoenix prompt '{name}' ({tag}): {exc}",
                         hint="pass every template variable of the prompt") from exc
