"""What production calls look like beyond the default (one user turn, a plain system prompt, no tools): the
shapes real apps send, for `make_traffic(..., shapes=TrafficShapes(...))`.

- **Templates**: with `variables`, the policy's system prompt is a template (`template_format` F_STRING `{var}`
  or MUSTACHE `{{var}}`) rendered per call with the next variables (cycled), inside openinference's real
  `using_prompt_template(template, variables, version)`, exactly as an instrumented app marks it.
- **Multi-turn histories**: with `turns` > 1, each call carries earlier user turns (other generated inputs, each
  answered by a fixed assistant reply) before the current one.
- **Tools**: `tools` (OpenAI tool definitions) and `tool_choice` go with every call; a forced choice makes every
  output a tool call, which the judges read as `Message.output_text` (text, then the calls as JSON).
The default `TrafficShapes()` changes nothing: the same requests, spans and judge inputs as before.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Literal

from selfimprove.core.templates import render

EARLIER_REPLY = "Thanks for the details. Is there anything else I can help with?"


@dataclass(frozen=True)
class TrafficShapes:
    variables: tuple[dict[str, Any], ...] = ()  # non-empty: the system prompt is a template, one set per call
    template_format: Literal["F_STRING", "MUSTACHE"] = "F_STRING"
    template_version: str = "v1"
    turns: int = 1
    tools: tuple[dict[str, Any], ...] = ()
    tool_choice: str | dict[str, Any] | None = None

    def call_variables(self, i: int) -> dict[str, Any] | None:
        return dict(self.variables[i % len(self.variables)]) if self.variables else None

    def system(self, prompt: str, i: int) -> str:
        """The system prompt call `i` sends: the template rendered with its variables, or the prompt itself."""
        variables = self.call_variables(i)
        return prompt if variables is None else render(prompt, self.template_format, variables)

    def marked(self, prompt: str, i: int) -> contextlib.AbstractContextManager:
        """The context an instrumented app wraps call `i` in: `using_prompt_template` for a template."""
        variables = self.call_variables(i)
        if variables is None:
            return contextlib.nullcontext()
        from openinference.instrumentation import using_prompt_template

        return using_prompt_template(template=prompt, variables=variables, version=self.template_version)

    def history(self, msgs: list[dict[str, str]], earlier: list[list[dict[str, str]]], i: int) -> list[dict[str, Any]]:
        """Call `i`'s messages after the system prompt: `turns - 1` earlier user turns (from `earlier`, each
        answered by `EARLIER_REPLY`), then the current input `msgs`."""
        out: list[dict[str, Any]] = []
        for k in range(self.turns - 1):
            out += [*earlier[(i + k) % len(earlier)], {"role": "assistant", "content": EARLIER_REPLY}]
        return out + list(msgs)

    def params(self) -> dict[str, Any]:
        if not self.tools:
            return {}
        out: dict[str, Any] = {"tools": [dict(t) for t in self.tools]}
        if self.tool_choice is not None:
            out["tool_choice"] = self.tool_choice
        return out


def judge_input(history: list[dict[str, Any]]) -> str:
    """The `{input}` a judge reads for a call: the same text replay gives its judges (`evals.judges.input_text`)."""
    from selfimprove.core.records import Message
    from selfimprove.evals.judges import input_text

    return input_text([Message.model_validate(m) for m in history])


def judged_output(message: Any) -> str:
    """The `{output}` a judge reads for a response message: its text, then its tool calls as JSON."""
    from selfimprove.evals.judges import judged_output_text

    return judged_output_text(message.model_dump(), message.content or "")
