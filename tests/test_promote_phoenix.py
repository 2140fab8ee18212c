"""`promote --push-phoenix` and `load_policy(source=...)` against the real Phoenix server (session fixture)."""

import pytest
from test_promote import make_run

import selfimprove
from selfimprove.app.runtime import load_build
from selfimprove.core.errors import UsageError
from selfimprove.stages.promote import promote

pytestmark = pytest.mark.phoenix


def _config(root, phoenix, target):
    (root / "configs").mkdir(exist_ok=True)
    (root / "configs" / f"{target}.toml").write_text(
        f'target = "{target}"\n[telemetry.phoenix]\nendpoint = "{phoenix.url}"\n'
        '[evals]\nprimary = "policy"\n')


def test_push_phoenix_tags_production_and_apps_load_it(tmp_path, phoenix, project_name):
    target = project_name  # a prompt name unique to this test
    _config(tmp_path, phoenix, target)
    run, _ = make_run(tmp_path, target=target, base="Hello {{customer}}.", cand="Hello {{customer}}. Cite ids.")
    res = promote(root=tmp_path, target=target, run=run.run_id, push_phoenix=True)
    assert res.phoenix["tag"] == "production" and res.phoenix["prompt"] == target
    local = selfimprove.load_policy(target, root=tmp_path, variables={"customer": "Ada"})
    remote = selfimprove.load_policy(target, root=tmp_path, source="phoenix", variables={"customer": "Ada"})
    assert local == remote == {"model": "sim-small", "temperature": 0.2,
                               "messages": [{"role": "system", "content": "Hello Ada. Cite ids."}]}

    back = promote(root=tmp_path, target=target, to="v0001", push_phoenix=True)
    assert back.phoenix["version_id"] != res.phoenix["version_id"]
    assert selfimprove.load_policy(target, root=tmp_path, source="phoenix")["messages"][0]["content"] == \
        "Hello {{customer}}."
    assert selfimprove.load_policy(target, root=tmp_path, ttl=0)["messages"][0]["content"] == "Hello {{customer}}."


TOOL = {"type": "function", "function": {"name": "lookup_order", "description": "Find an order",
                                         "parameters": {"type": "object", "properties": {"id": {"type": "string"}},
                                                        "required": ["id"]}}}


def test_a_template_build_keeps_its_format_tools_and_renders_strictly(tmp_path, phoenix, project_name):
    target = project_name + "-tpl"
    _config(tmp_path, phoenix, target)
    fields = {"template_format": "F_STRING", "tools": (TOOL,), "tool_choice": "auto"}
    run, _ = make_run(tmp_path, target=target, base="Support for {team}.", cand="Support for {team}. Cite {{ids}}.",
                      policy_fields=fields)
    res = promote(root=tmp_path, target=target, run=run.run_id, push_phoenix=True)
    build = load_build(target, root=tmp_path)
    assert build.policy.template_format == "F_STRING" and build.policy.variables == {"team"}
    local = selfimprove.load_policy(target, root=tmp_path, variables={"team": "billing"})
    remote = selfimprove.load_policy(target, root=tmp_path, source="phoenix", variables={"team": "billing"})
    assert local["messages"] == [{"role": "system", "content": "Support for billing. Cite {ids}."}]  # f-string {{
    assert local["tools"] == [TOOL] and local["tool_choice"] == "auto"
    assert remote["messages"] == local["messages"] and remote["tools"][0]["function"]["name"] == "lookup_order"
    from phoenix.client import Client

    version = Client(base_url=phoenix.url).prompts.get(prompt_identifier=res.phoenix["prompt"], tag="production")
    assert version._dumps()["template_format"] == "F_STRING"
    for source in ("local", "phoenix"):
        with pytest.raises(UsageError, match="team"):
            selfimprove.load_policy(target, root=tmp_path, source=source, variables={"other": "x"})
    assert selfimprove.load_policy(target, root=tmp_path)["messages"][0]["content"] == "Support for {team}. Cite {{ids}}."


def test_phoenix_without_a_tagged_prompt_is_a_usage_error(phoenix):
    with pytest.raises(UsageError, match="no prompt 'never-pushed-xyz' tagged 'production'"):
        selfimprove.load_policy("never-pushed-xyz", source="phoenix", endpoint=phoenix.url)
