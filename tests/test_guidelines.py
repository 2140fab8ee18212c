"""Guidelines (core/guidelines.py), the hypothesis records (core/hypothesis.py) and hand-written policy files
(config/policy_file.py): pure logic, no I/O but the policy files."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from selfimprove.config.policy_file import load_policy, with_overrides
from selfimprove.core.errors import ConfigError, UsageError
from selfimprove.core.guidelines import guideline_change, guideline_id, split_guidelines, without_guideline
from selfimprove.core.hypothesis import ArmSource, hypothesis_id, policy_change
from selfimprove.core.records import Policy

PROMPT = "You are a support agent.\n\n- Quote the order number.\n  * Never promise a refund.\n2) Reply in kind.\n"


def test_a_prompt_splits_into_its_instruction_lines_whatever_the_bullet():
    gs = split_guidelines(PROMPT)
    assert [g.text for g in gs] == ["You are a support agent.", "Quote the order number.",
                                    "Never promise a refund.", "Reply in kind."]
    assert all(g.id.startswith("g-") and len(g.id) == 12 for g in gs)
    # the same instruction is the same guideline with another marker or spacing
    assert guideline_id("1.  Quote the   order number.") == gs[1].id != gs[2].id
    assert split_guidelines("a\na\n") == split_guidelines("a")


def test_the_change_names_added_and_removed_lines_and_ablation_removes_exactly_one():
    after = PROMPT.replace("2) Reply in kind.\n", "- Keep it under 80 words.\n")
    change = guideline_change(PROMPT, after)
    assert [g.text for g in change.added] == ["Keep it under 80 words."]
    assert [g.text for g in change.removed] == ["Reply in kind."]
    assert guideline_change(PROMPT, PROMPT + "\n").empty
    gid = split_guidelines(PROMPT)[2].id
    assert without_guideline(PROMPT, gid) == PROMPT.replace("  * Never promise a refund.\n", "")
    with pytest.raises(ValueError):
        without_guideline(PROMPT, "g-0000000000")


@given(st.lists(st.text(alphabet="abc -*.1\t", max_size=12), max_size=8))
def test_removing_each_guideline_leaves_all_the_others(lines):
    prompt = "\n".join(lines)
    gs = split_guidelines(prompt)
    for g in gs:
        rest = split_guidelines(without_guideline(prompt, g.id))
        assert [x.id for x in rest] == [x.id for x in gs if x.id != g.id]


def test_policy_change_and_hypothesis_id():
    a = Policy(system_prompt="Be nice.", model="m", temperature=0.7)
    b = a.model_copy(update={"system_prompt": "Be nice.\n- Quote the order.", "temperature": 0.2})
    change = policy_change(a, b)
    assert [g.text for g in change.guidelines.added] == ["Quote the order."]
    assert change.params == {"temperature": (0.7, 0.2)} and not change.few_shot_changed and not change.empty
    assert policy_change(a, a).empty
    ctl, tst = (ArmSource(kind="production", ref="production", policy_digest=a.digest),
                ArmSource(kind="file", ref="p.toml", policy_digest=b.digest))
    hid = hypothesis_id(ctl, tst, "policy", "test", 0.15)
    assert hid.startswith("h-") and hid == hypothesis_id(ctl, tst, "policy", "test", 0.15)
    assert hid != hypothesis_id(ctl, tst, "policy", "test", 0.1) != hypothesis_id(tst, ctl, "policy", "test", 0.15)


def test_a_hand_written_policy_file_in_toml_or_json_with_overrides(tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text('system_prompt = """Be nice.\n- Quote the order."""\nmodel = "sim-small"\ntemperature = 0.7\n')
    p = load_policy(toml, ["temperature=0.2", "max_tokens=100"])
    assert p.system_prompt == "Be nice.\n- Quote the order." and p.temperature == 0.2 and p.max_tokens == 100
    # a candidate or build document carries its policy under `policy`
    doc = tmp_path / "c.json"
    doc.write_text(json.dumps({"schema": "selfimprove.candidate/1", "id": "c-1", "policy": p.model_dump(mode="json")}))
    assert load_policy(doc) == p
    assert with_overrides(p, [], "x") is p
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "m"\ntemprature = 0.2\n')
    with pytest.raises(ConfigError) as exc:
        load_policy(bad)
    assert "system_prompt" in exc.value.message and "temprature" in exc.value.message
    with pytest.raises(ConfigError, match="temperature"):
        load_policy(toml, ["temperature=hot"])
    with pytest.raises(UsageError, match="not found"):
        load_policy(tmp_path / "missing.toml")
