"""Prompt templates: Phoenix's formats (compared with phoenix-client's own formatters), strict rendering, spans
whose template is the policy (variables kept, missing or malformed ones counted), the variables guard, the
dataset column, and a replay that renders each sample's variables and never sends a placeholder."""

from __future__ import annotations

import json

import pytest
from fixtures.span_rows import messages
from hypothesis import given, settings
from hypothesis import strategies as st

from selfimprove.core.errors import UsageError
from selfimprove.core.records import Message, Policy, Sample
from selfimprove.core.templates import TemplateError, locate, render, rendering_format, variables_of
from selfimprove.dataset.table import frame_to_samples, samples_to_frame
from selfimprove.evaluation.replay import require_renderable
from selfimprove.optimizers.guards import GuardContext, run_guards
from selfimprove.telemetry.spans import BadSpan, parse_span

TEMPLATE = "You are support for the {team} team. Answer in {lang}."
GOLDEN_TEMPLATED = "sha256:5822a691fcd189482efc0dd23364c12cb57321f1e74b7206282c63bd3f853d96"  # canonical JSON + template_format


def templated(text=TEMPLATE, fmt="F_STRING", **kw):
    return Policy(system_prompt=text, model="sim-small", temperature=0.0, template_format=fmt, **kw)


name = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True)
value = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="{}\\"),
                max_size=12)
literal = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",), exclude_characters="{}\\"),
                  max_size=12)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(literal, name), min_size=1, max_size=4), literal, st.data())
def test_render_matches_phoenix_client_formatters(pieces, tail, data):
    from phoenix.client.utils.template_formatters import (
        F_STRING_TEMPLATE_FORMATTER,
        MUSTACHE_TEMPLATE_FORMATTER,
    )

    names = sorted({n for _lit, n in pieces})
    values = {n: data.draw(value) for n in names}
    for fmt, formatter, wrap in (("F_STRING", F_STRING_TEMPLATE_FORMATTER, "{%s}"),
                                 ("MUSTACHE", MUSTACHE_TEMPLATE_FORMATTER, "{{ %s }}")):
        template = "".join(lit + wrap % n for lit, n in pieces) + tail
        assert variables_of(template, fmt) == set(formatter.parse(template)) == set(names)
        rendered = render(template, fmt, values)
        assert rendered == formatter.format(template, variables=values)
        assert locate(template, fmt, rendered) and rendering_format(template, values, rendered) is not None


def test_rendering_is_strict_and_escapes_are_literal():
    with pytest.raises(TemplateError) as err:
        render(TEMPLATE, "F_STRING", {"team": "billing"})
    assert err.value.missing == ("lang",)
    assert render('Reply as JSON {{"ok": true}} for {team}', "F_STRING", {"team": "a"}) == 'Reply as JSON {"ok": true} for a'
    assert render(r"keep \{{x}} and {{ y }}", "MUSTACHE", {"y": 1}) == r"keep \{{x}} and 1"
    assert render("{n:.2f}", "F_STRING", {"n": 0.5}) == "0.50"  # the value's own type, as the app's str.format
    assert render("plain {x}", None, None) == "plain {x}"  # not a template: sent as it is
    with pytest.raises(TemplateError):
        variables_of("a lone { brace", "F_STRING")
    assert not locate(TEMPLATE, "F_STRING", "You are support. Answer in French.")


def test_policy_digest_keeps_old_policies_and_pins_templated_ones():
    plain = Policy(system_prompt="You are terse.", model="sim-small")
    assert "template_format" not in plain.model_dump(mode="json") and "tool_choice" not in plain.model_dump()
    assert templated().digest == GOLDEN_TEMPLATED
    assert templated().digest != templated(fmt="MUSTACHE").digest
    assert templated().system_for({"team": "billing", "lang": "French"}) == \
        "You are support for the billing team. Answer in French."


def _row(system, template=None, user="Where is my order?", **over):
    row = {"span_id": over.pop("span_id", "a" * 16), "trace_id": "t" * 32, "span_kind": "LLM", "status_code": "OK",
           "input_messages": json.dumps(messages("flat", [{"role": "system", "content": system},
                                                           {"role": "user", "content": user}])),
           "output_messages": json.dumps(messages("flat", [{"role": "assistant", "content": "On its way."}])),
           "invocation_parameters": '{"model": "sim-small", "temperature": 0.0}', "model_name": "sim-small",
           "prompt_template": None if template is None else json.dumps(template)}
    row.update(over)
    return row


def test_spans_rendered_from_one_template_are_one_policy_with_their_own_variables():
    rows = [_row(TEMPLATE.format(team=t, lang=lang), {"template": TEMPLATE, "variables": {"team": t, "lang": lang},
                                                       "version": "v3"})
            for t, lang in (("billing", "French"), ("returns", "German"))]
    a, b = (parse_span(r) for r in rows)
    assert a.policy == b.policy == templated() and a.policy_digest == GOLDEN_TEMPLATED
    assert (a.variables, b.variables) == ({"team": "billing", "lang": "French"}, {"team": "returns", "lang": "German"})
    assert a.template_version == "v3"
    mustache = "Hi {{ name }}, you are on {{team}}."
    m = parse_span(_row("Hi Ann, you are on ops.", {"template": mustache, "variables": {"name": "Ann", "team": "ops"}}))
    assert m.policy.template_format == "MUSTACHE" and m.policy.system_prompt == mustache


@pytest.mark.parametrize("template, reason", [
    ({"template": TEMPLATE}, "template_variables_missing"),
    ({"template": TEMPLATE, "variables": {"team": "billing"}}, "template_variables_missing"),
    ({"template": TEMPLATE, "variables": "{not json"}, "template_variables_malformed"),
    ({"template": TEMPLATE, "variables": "[1, 2]"}, "template_variables_malformed"),
    ({"template": TEMPLATE, "variables": {"team": "returns", "lang": "French"}}, "template_mismatch"),
])
def test_a_template_that_cannot_reproduce_the_prompt_is_a_counted_bad_span(template, reason):
    out = parse_span(_row("You are support for the billing team. Answer in French.", template))
    assert isinstance(out, BadSpan) and out.reason == reason, out


def test_templates_of_other_messages_or_calls_leave_the_literal_prompt():
    user_tpl = {"template": "Where is my {thing}?", "variables": {"thing": "order"}}
    elsewhere = parse_span(_row("Be kind.", user_tpl))
    assert elsewhere.policy.system_prompt == "Be kind." and elsewhere.policy.template_format is None
    assert elsewhere.template_note == "template.elsewhere" and elsewhere.variables is None
    unmatched = parse_span(_row("Be kind.", {"template": "Summarise {doc}", "variables": {"doc": "x"}}))
    assert unmatched.template_note == "template.unmatched" and unmatched.policy.system_prompt == "Be kind."
    no_placeholders = parse_span(_row("Be kind.", {"template": "Be kind.", "version": "v1"}))
    assert no_placeholders.template_note is None and no_placeholders.policy.template_format is None


def test_guard_rejects_dropped_renamed_added_variables_and_broken_templates():
    parent = templated()
    ctx = GuardContext()

    def guard(text, fmt="F_STRING"):
        return {g.name: g for g in run_guards(templated(text, fmt), parent, ctx)}["template_variables"]

    assert guard(TEMPLATE + " Always apologise for delays.").passed
    assert "dropped template variables: {lang}" in guard("You are support for the {team} team.").reason
    renamed = guard("You are support for the {group} team. Answer in {lang}.")
    assert not renamed.passed and "{team}" in renamed.reason and "{group}" in renamed.reason
    assert "{tone}" in guard(TEMPLATE + " Be {tone}.").reason
    assert not guard(TEMPLATE + ' Reply like {"a": 1}.').passed  # JSON braces read as a field: rejected too
    assert "not a valid F_STRING template" in guard(TEMPLATE + " Never type a lone { brace.").reason
    assert "format changed" in guard(TEMPLATE, "MUSTACHE").reason
    changed = {g.name: g for g in run_guards(templated(tools=(LOOKUP,), tool_choice="required"),
                                             templated(tools=(LOOKUP,), tool_choice="auto"), ctx)}
    assert changed["output_contract"].reason == "tool_choice changed"
    # a candidate is never repaired: the failing one is kept as it was proposed
    assert templated(TEMPLATE + " Be {tone}.").system_prompt.endswith("{tone}.")


def _sample(sid, variables, split="test"):
    return Sample(sample_id=sid, span_id=sid, trace_id="t" + sid, history=(Message(role="user", content="hi"),),
                  output=Message(role="assistant", content="ok"), split=split, variables=variables)


def test_dataset_keeps_each_samples_variables_and_reads_old_tables():
    samples = [_sample("s1", {"team": "billing", "lang": "French"}), _sample("s2", None)]
    frame = samples_to_frame(samples, [])
    assert frame["variables"][0] == '{"lang": "French", "team": "billing"}' and frame["variables"].isna()[1]
    assert frame_to_samples(frame) == samples
    assert frame_to_samples(frame.drop(columns=["variables"]))[0].variables is None  # written before the column


def test_replay_refuses_samples_without_the_templates_variables():
    policy = templated()
    ok = _sample("s1", {"team": "billing", "lang": "French"})
    require_renderable(policy, [ok])
    assert policy.messages_for(ok.history, ok.variables)[0]["content"] == \
        "You are support for the billing team. Answer in French."
    with pytest.raises(UsageError, match=r"1 of 2 samples lack variables .*sample s2: lang"):
        require_renderable(policy, [ok, _sample("s2", {"team": "billing"})])
    with pytest.raises(TemplateError):
        policy.messages_for(ok.history, {"team": "billing"})
    require_renderable(Policy(system_prompt="plain {x}", model="m"), [_sample("s3", None)])  # plain: as it is


def _file_row(i, system, template=None, user=None):
    from fixtures.span_rows import span_row

    row = span_row(i, system=system, user=user or f"question {i % 6}", temperature=0.0)
    if template is not None:
        for key, v in template.items():
            row[f"attributes.llm.prompt_template.{key}"] = v
    return row


def test_snapshot_of_a_templated_app_keeps_one_policy_and_counts_what_it_cannot_use(tmp_path):
    from fixtures.span_rows import workspace, write_spans
    from typer.testing import CliRunner

    from selfimprove.cli.app import app
    from selfimprove.dataset.table import read_samples
    from selfimprove.stages.pull import pull

    teams = ["billing", "returns", "sales"]
    # an older, unmarked deployment: one rendering per team, each its own policy
    rows = [_file_row(i, f"Old prompt. You help the {t} team politely.") for i, t in enumerate(teams * 2)]
    # the current one marks its template; question k%4 for team k%3: each question asked for three teams
    rows += [_file_row(40 + k, TEMPLATE.format(team=teams[k % 3], lang="French"),
                       {"template": TEMPLATE, "variables": json.dumps({"team": teams[k % 3], "lang": "French"}),
                        "version": "v2"}, user=f"question {k % 4}") for k in range(12)]
    rows.append(_file_row(20, TEMPLATE.format(team="ops", lang="French"), {"template": TEMPLATE}))
    rows.append(_file_row(21, TEMPLATE.format(team="ops", lang="French"), {"template": TEMPLATE,
                                                                           "variables": "{team: ops"}))
    spans = write_spans(tmp_path / "spans.jsonl", rows)
    workspace(tmp_path, spans)
    pull(root=tmp_path, since="2024-05-01T00:00Z", until="2024-05-02T00:00Z")
    out = CliRunner().invoke(app, ["snapshot", "--root", str(tmp_path), "--json", "--min-policy-samples", "50"])
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    current = [p for p in doc["policies"] if p["current"]]
    assert doc["policy_digest"] == GOLDEN_TEMPLATED
    assert len(doc["policies"]) == 4 and current[0]["samples"] == 12  # the template + 3 unmarked renderings
    assert current[0]["template_format"] == "F_STRING" and current[0]["variables"] == ["lang", "team"]
    assert current[0]["template_versions"] == ["v2"] and current[0]["first"] and current[0]["last"]
    assert doc["bad"] == {"template_variables_missing": 1, "template_variables_malformed": 1}
    assert any("3 system prompts (6 calls) differ only in a few words" in w and "using_prompt_template" in w
               for w in doc["warnings"])
    assert any("holds 12 samples, fewer than 50" in w for w in doc["warnings"]), [w[:90] for w in doc["warnings"]]
    samples = {s.sample_id: s for s in read_samples(f"{doc['run_path']}/dataset.parquet")}
    # the old deployment's calls have no team to fill the current template with: counted, left out
    assert doc["counts"]["dropped.template_variables"] == 6 and len(samples) == 12
    assert any("6 calls of other policies have no values for the current template's variables (lang, team)" in n
               for n in doc["notes"])
    templated_ids = {f"{40 + k:016x}" for k in range(12)}
    assert templated_ids <= set(samples)  # same question for another team is another input: nothing deduplicated
    assert all(samples[i].variables == {"team": teams[(int(i, 16) - 40) % 3], "lang": "French"}
               for i in templated_ids)
    report = (tmp_path / doc["run_path"] / "snapshot.md").read_text()
    assert "template_variables_missing" in report and "F_STRING: lang, team (version v2)" in report
    checkpoint = json.loads((tmp_path / doc["run_path"] / "checkpoint.json").read_text())
    assert checkpoint["policy"]["system_prompt"] == TEMPLATE and checkpoint["policy"]["template_format"] == "F_STRING"


LOOKUP = {"type": "function", "function": {"name": "lookup_order", "description": "Look an order up.",
                                           "parameters": {"type": "object", "properties": {"order_id": {
                                               "type": "string"}}, "required": ["order_id"]}}}


def test_tool_definitions_and_choice_are_replayed_and_a_tool_call_is_judged_as_in_production(tmp_path, monkeypatch):
    """A production call forced to call a tool: the span's tools and tool_choice are the policy's, the tool-call
    output is kept, and the replay (same request) gives the judge exactly the production output's text."""
    import openai
    from fixtures.sim_checkpoint import config_text

    from selfimprove.config.load import load_config
    from selfimprove.evaluation.replay import PolicyScorer, agenerate
    from selfimprove.llm.run import run_sync
    from selfimprove.sim import start_server

    choice = {"type": "function", "function": {"name": "lookup_order"}}
    history = [{"role": "system", "content": "You are support."}, {"role": "user", "content": "Where is #12345?"}]
    with start_server("support", seed=0) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sim")
        r = client.chat.completions.create(model="sim-small", messages=history, temperature=0.0, tools=[LOOKUP],
                                           tool_choice=choice)
        produced = r.choices[0].message.model_dump(exclude_none=True)
        assert produced["tool_calls"] and not produced.get("content")
        row = _row("You are support.", user="Where is #12345?",
                   invocation_parameters=json.dumps({"model": "sim-small", "temperature": 0.0, "tool_choice": choice}),
                   output_messages=json.dumps(messages("flat", [produced])),
                   tools=json.dumps([{"tool.json_schema": json.dumps(LOOKUP)}]))
        span = parse_span(row)
        assert span.policy.tools == (LOOKUP,) and span.policy.tool_choice == choice and not span.unreplayed
        assert span.output.tool_calls[0].function.name == "lookup_order"
        sample = Sample(sample_id="s", span_id="s", trace_id="t", history=span.history, output=span.output)
        (tmp_path / "support.toml").write_text(config_text(sim.base_url))
        monkeypatch.setenv("SIM_API_KEY", "sim")
        scorer = PolicyScorer.from_config(load_config(tmp_path / "support.toml", []), cache_dir=tmp_path / "c", evals=[])
        sim.reset_stats()
        gen = run_sync(agenerate(span.policy, sample, scorer.llm))
        sent, = sim.requests()
    assert sent["tools"] == [LOOKUP] and sent["tool_choice"] == choice
    assert gen.output == sample.output.output_text() and json.loads(gen.output)[0]["function"]["name"] == "lookup_order"


def test_parameters_replay_does_not_send_are_counted_and_named(tmp_path):
    from selfimprove.dataset.select import Selection, build_samples
    from selfimprove.evals.recover import Recovered

    params = {"model": "sim-small", "temperature": 0.0, "seed": 7, "stop": ["\n"], "stream": False,
              "tools": [LOOKUP], "parallel_tool_calls": False}
    rows = [_row("Be kind.", span_id=f"{i:016x}", user=f"q{i}", invocation_parameters=json.dumps(params))
            for i in range(3)]
    span = parse_span(rows[0])
    assert span.unreplayed == ("seed", "stop") and span.policy.parallel_tool_calls is False
    assert span.policy.params()["parallel_tool_calls"] is False  # sent with its tools
    built = build_samples([rows], Recovered(results={}, specs={}, spec_sources={}), Selection(test_size=0.3, seed=0))
    assert built.counts["unreplayed_param.seed"] == 3 and built.counts["unreplayed_param.stop"] == 3
    assert any("replay does not send: seed (3 calls), stop (3 calls)" in w for w in built.warnings)
