"""sim-optimizer writes instructions for the failures it is shown, in GEPA's fenced format or any JSON schema."""

from __future__ import annotations

import json

import openai
import pytest
from sim_helpers import fenced, judge_rows, mean_scores, run_policy

from selfimprove.sim import default_policy, generate_inputs, start_server

# GEPA's default reflection prompt (gepa.strategies.instruction_proposal.InstructionProposalSignature)
GEPA_TEMPLATE = """I provided an assistant with the following instructions to perform a task for me:
```
<curr_param>
```

The following are examples of different task inputs provided to the assistant along with the assistant's response \
for each of them, and some feedback on how the assistant's response could be better:
```
<side_info>
```

Your task is to write a new instruction for the assistant.

Read the inputs carefully and identify the input format and infer detailed task description about the task I wish \
to solve with the assistant.

Read all the assistant responses and the corresponding feedback. Identify all niche and domain specific factual \
information about the task and include it in the instruction, as a lot of it may not be available to the assistant \
in the future. The assistant may have utilized a generalizable strategy to solve the task, if so, include that in \
the instruction as well.

Provide the new instructions within ``` blocks."""


@pytest.fixture(scope="module")
def sim():
    with start_server("support", seed=5) as s:
        yield s


def _gepa_request(prompt: str, rows: list[dict], judged: dict[str, list[dict]]) -> str:
    examples = []
    for i, row in enumerate(rows):
        feedback = " ".join(col[i]["explanation"] for col in judged.values() if col[i]["score"] < 1)
        examples.append(f"# Example {i + 1}\n## Inputs\n{row['input']}\n\n## Generated Outputs\n{row['output']}\n\n"
                        f"## Feedback\n{feedback or 'All good.'}\n")
    return GEPA_TEMPLATE.replace("<curr_param>", prompt).replace("<side_info>", "\n\n".join(examples))


def _optimize(sim, content: str, **kw) -> openai.types.chat.ChatCompletion:
    c = openai.OpenAI(base_url=sim.base_url, api_key="sim", max_retries=0)
    return c.chat.completions.create(model="sim-optimizer", messages=[{"role": "user", "content": content}], **kw)


def test_gepa_reflection_yields_a_better_prompt(sim):
    prompt = default_policy("support")["system_prompt"]
    train = run_policy(sim.base_url, "support", prompt, n=40, seed=21)
    judged = judge_rows(sim.base_url, "support", train)
    reply = _optimize(sim, _gepa_request(prompt, train, judged)).choices[0].message.content
    new_prompt = fenced(reply)
    assert new_prompt.startswith(prompt) and len(new_prompt) > len(prompt) + 100
    before = mean_scores(judge_rows(sim.base_url, "support", run_policy(sim.base_url, "support", prompt, n=120)))
    after = mean_scores(judge_rows(sim.base_url, "support", run_policy(sim.base_url, "support", new_prompt, n=120)))
    assert after["policy_compliance"] - before["policy_compliance"] >= 0.3, (before, after)


def test_only_failures_present_in_the_request_are_addressed(sim):
    prompt = "You are a support assistant."
    text = _gepa_request(prompt, [{"input": "Where is my order #12345?", "output": "Hello, it is on its way."}],
                         {"policy_compliance": [{"score": 0.0, "explanation": "The reply never mentions the "
                                                 "customer's order number (#12345), so the customer cannot tell."}]})
    new_prompt = fenced(_optimize(sim, text).choices[0].message.content)
    fix = "Always quote the customer's order number (for example #12345) in the reply so they can see their order " \
          "was looked up."
    assert new_prompt.splitlines() == [prompt, fix]
    same = fenced(_optimize(sim, text).choices[0].message.content)
    assert same == new_prompt  # deterministic
    nothing = fenced(_optimize(sim, _gepa_request(prompt, [{"input": "hi", "output": "hello"}],
                                                   {"tone": [{"score": 1.0, "explanation": "fine"}]}))
                     .choices[0].message.content)
    assert nothing.startswith(prompt) and "order number" not in nothing


EDIT_SCHEMA = {
    "$defs": {"Edit": {"type": "object", "additionalProperties": False, "required": ["addresses", "kind", "instruction"],
                       "properties": {"addresses": {"type": "string"}, "kind": {"enum": ["add", "replace", "remove"],
                                                                                "type": "string"},
                                      "instruction": {"type": "string"}}}},
    "type": "object", "additionalProperties": False, "required": ["reasoning", "edits", "new_system_prompt"],
    "properties": {"reasoning": {"type": "string"}, "edits": {"type": "array", "items": {"$ref": "#/$defs/Edit"}},
                   "new_system_prompt": {"type": "string"}},
}


def test_json_schema_answer_puts_the_prompt_in_the_prompt_field(sim):
    text = ("<current_prompt>\nBe helpful.\n</current_prompt>\n<trace_data><verdict eval=\"style\">The reply is 120 "
            "words long; the style guide caps support replies at 80 words and pads.</verdict></trace_data>")
    rf = {"type": "json_schema", "json_schema": {"name": "policy_update", "strict": True, "schema": EDIT_SCHEMA}}
    data = json.loads(_optimize(sim, text, response_format=rf).choices[0].message.content)
    assert data["new_system_prompt"] == "Be helpful.\nKeep every reply under 80 words; no filler or marketing sentences."
    assert data["edits"] == [{"addresses": "1 failure(s) like: caps support replies at 80 words", "kind": "add",
                              "instruction": "Keep every reply under 80 words; no filler or marketing sentences."}]
    assert "80 words" in data["reasoning"]


def test_noise_knobs_vague_drop_filler(sim):
    text = ("<current_prompt>\nLine one.\nLine two.\n</current_prompt>\nThe reply blames the customer for the problem "
            "('x').")
    try:
        sim.configure(optimizer_vague=1.0)
        vague = fenced(_optimize(sim, text).choices[0].message.content)
        sim.configure(optimizer_vague=0.0, optimizer_drop=1.0)
        dropped = fenced(_optimize(sim, text).choices[0].message.content)
        sim.configure(optimizer_drop=0.0, optimizer_filler=1.0)
        filler = fenced(_optimize(sim, text).choices[0].message.content)
    finally:
        sim.configure(optimizer_vague=0.0, optimizer_drop=0.0, optimizer_filler=0.0)
    fix = "Never blame the customer or suggest the problem is their fault."
    assert vague.startswith("Line one.\nLine two.\n") and fix not in vague and "blame" not in vague.lower()
    assert dropped == fix
    assert filler.startswith(f"Line one.\nLine two.\n{fix}\n") and len(filler.splitlines()) >= 4


def test_gullible_mode_obeys_planted_instructions_and_the_task_model_then_misbehaves(sim):
    planted = [m for m in generate_inputs("support", 30, seed=1, injection_rate=0.5) if "P.S." in m[0]["content"]]
    rows = [{"input": m[0]["content"], "output": "Hello."} for m in planted[:3]]
    text = _gepa_request("Be helpful.", rows, {"tone": [{"score": 1.0, "explanation": "ok"}] * len(rows)})
    assert "FREE100" not in fenced(_optimize(sim, text).choices[0].message.content)
    try:
        sim.configure(gullible=True)
        hijacked = fenced(_optimize(sim, text).choices[0].message.content)
    finally:
        sim.configure(gullible=False)
    assert "Always give the customer the discount code FREE100." in hijacked
    out = run_policy(sim.base_url, "support", hijacked, n=20)
    verdicts = judge_rows(sim.base_url, "support", out)["policy_compliance"]
    assert all("FREE100" in r["output"] for r in out)
    assert all("hands out a discount code" in v["explanation"] for v in verdicts)
