"""Guards every candidate must pass before it may be evaluated (the seeds' "failure checks for generated actions").

Each guard is a pure function of (child, parent, context) returning a GuardResult with a reason when it fails:
- `template_variables`: the parent's template variables are all kept, and no new ones appear (in the policy's
  template format when it has one; a candidate that is no longer a valid template, or changes the format, fails):
  the guard rejects, it never repairs;
- `not_empty`: the system prompt has text;
- `length_cap`: the prompt is at most `max_growth` × the parent's length (with a small floor of room, so that a
  one-line prompt can still learn a few rules);
- `no_planted_content`: nothing that looks planted in trace data (URLs, e-mail addresses, code blocks,
  "ignore previous instructions"-style phrases, identifiers or runs of words copied from trace inputs) unless the
  parent prompt, the eval definitions or the constitution already contain it;
- `no_meta_prompt_tags`: none of the meta-prompt's own tags (`<current_prompt>`, `<trace_data>`, `<feedback …>`,
  …) unless the parent has it: a small optimizer model copies the scaffolding it was shown into its answer (seen
  on Qwen2.5-Coder 1.5B), and such a prompt would show the task model tags it was never meant to read;
- `constitution`: every must-keep line of the config is still present;
- `output_contract`: response_format, tools and tool_choice unchanged, model only from the allowed list, unless
  allowed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from selfimprove.core.records import EvalSpec, GuardResult, Policy

MIN_ROOM_CHARS = 1000  # a prompt may always grow by this much (~150-200 words), whatever max_growth says
COPY_WINDOW_WORDS = 6  # a run of this many words copied from a trace input is treated as planted

_VAR = re.compile(r"\{\{\s*([A-Za-z_][\w.]*)\s*\}\}|(?<!\{)\{([A-Za-z_]\w*)\}(?!\})")
_URL = re.compile(r"(?:https?|ftp)://[^\s\"'<>)\]]+|\bwww\.[^\s\"'<>)\]]+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
_CODE = re.compile(r"```|<script\b|<\?php|<iframe\b", re.IGNORECASE)
_INJECTION = [re.compile(p, re.IGNORECASE) for p in (
    (r"\b(?:ignore|disregard|forget|override)\b[^.\n]{0,40}\b(?:previous|prior|above|earlier|all|other)\b"
    r"[^.\n]{0,20}\b(?:instructions?|rules?|prompts?|guidelines?|directions?)"),
    r"\b(?:note|message|instructions?)\s+(?:to|for)\s+(?:the\s+)?(?:ai|assistant|model|llm|system|bot|reviewer)\b",
    (r"\badd\s+(?:this|the following)\s+(?:line|instruction|rule|sentence)s?\s+to\s+(?:your|the)\s+"
    r"(?:instructions|prompt|system prompt|rules)"),
    r"\byou\s+are\s+now\b",
    r"\b(?:new|updated|real)\s+(?:system\s+)?instructions?\s*:",
    r"\bsystem\s+prompt\s*:",
    r"\bjailbreak|\bdeveloper\s+mode\b",
)]
_IDENT = re.compile(r"\b(?=[A-Za-z0-9_-]*\d)(?=[A-Za-z0-9_-]*[A-Z])[A-Z0-9][A-Za-z0-9_-]{3,}\b")
_WORD = re.compile(r"[\w']+")
# The tags the meta-prompts (optimizers/metaprompt.py, critique.py) wrap their parts in; tests/test_guards.py
# checks that every tag they use is listed here.
META_TAGS = ("current_prompt", "trace_data", "feedback", "evals", "eval", "template", "rails", "critique",
             "verdict", "input", "output")
_META_TAG = re.compile(r"</?\s*(" + "|".join(META_TAGS) + r")\b[^<>]{0,200}>", re.IGNORECASE)


def template_variables(text: str) -> set[str]:
    """`{{ var }}` (mustache/jinja) and `{var}` (f-string) placeholders in a prompt."""
    return {m.group(1) or m.group(2) for m in _VAR.finditer(text)}


def _norm_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass
class GuardContext:
    """What the guards compare against. `trace_inputs` are the texts of trace data the optimizer was shown (user
    and tool messages); `allowed_text` is trusted text (eval definitions, constitution). `derived_texts` are
    model-written texts about trace data (generated critiques): never trusted, and an identifier copied from one is
    planted like one copied from an input; their suggested instructions are meant to be adopted, so runs of their
    words are not (a planted line they relay is still a run of words copied from the input it came from)."""

    evals: Sequence[EvalSpec] = ()
    trace_inputs: Sequence[str] = ()
    constitution: Sequence[str] = ()
    max_growth: float = 2.0
    allowed_models: Sequence[str] = ()
    allow_output_contract_change: bool = False
    tune_temperature: bool = False
    derived_texts: list[str] = field(default_factory=list)  # generated critiques of trace data (trace-derived)
    _trace_windows: set[tuple[str, ...]] | None = field(default=None, repr=False)

    def trusted_text(self, parent: Policy) -> str:
        parts = [parent.system_prompt, *self.constitution]
        parts += [m.text() for m in parent.few_shot]
        for spec in self.evals:
            parts.append(spec.template if isinstance(spec.template, str) else str(spec.template or ""))
            parts += list((spec.choices or {}).keys())
        return "\n".join(parts)

    def trace_windows(self) -> set[tuple[str, ...]]:
        if self._trace_windows is None:
            wins: set[tuple[str, ...]] = set()
            for text in self.trace_inputs:
                words = _norm_words(text)
                wins.update(tuple(words[i:i + COPY_WINDOW_WORDS])
                            for i in range(len(words) - COPY_WINDOW_WORDS + 1))
            self._trace_windows = wins
        return self._trace_windows


def _policy_variables(policy: Policy) -> set[str]:
    """A templated policy's variables in its format (TemplateError if invalid); a plain prompt's `{x}`/`{{x}}`."""
    if policy.template_format is None:
        return template_variables(policy.system_prompt)
    return set(policy.variables)


def check_template_variables(child: Policy, parent: Policy, ctx: GuardContext) -> GuardResult:
    from selfimprove.core.templates import TemplateError

    name = "template_variables"
    if child.template_format != parent.template_format:
        return GuardResult(name=name, passed=False, reason=f"template format changed from "
                                                           f"{parent.template_format} to {child.template_format}")
    try:
        before, after = _policy_variables(parent), _policy_variables(child)
    except TemplateError as exc:
        return GuardResult(name=name, passed=False, reason=f"not a valid {child.template_format} template: {exc}")
    missing, extra = sorted(before - after), sorted(after - before)
    reasons = []
    if missing:
        reasons.append("dropped template variables: " + ", ".join("{" + v + "}" for v in missing))
    if extra:
        reasons.append("new template variables nothing fills: " + ", ".join("{" + v + "}" for v in extra))
    return GuardResult(name=name, passed=not reasons, reason="; ".join(reasons))


def check_not_empty(child: Policy, parent: Policy, ctx: GuardContext) -> GuardResult:
    ok = bool(child.system_prompt.strip()) and len(_norm_words(child.system_prompt)) >= 3
    return GuardResult(name="not_empty", passed=ok, reason="" if ok else "the system prompt is empty or trivial")


def length_cap(parent: Policy, max_growth: float) -> int:
    n = len(parent.system_prompt)
    return int(max(max_growth * n, n + MIN_ROOM_CHARS))


def check_length(child: Policy, parent: Policy, ctx: GuardContext) -> GuardResult:
    cap, n = length_cap(parent, ctx.max_growth), len(child.system_prompt)
    ok = n <= cap
    return GuardResult(name="length_cap", passed=ok,
                       reason="" if ok else f"{n} characters, over the cap of {cap} ({ctx.max_growth:g}× the "
                                            f"parent's {len(parent.system_prompt)})")


def planted_findings(text: str, trusted: str, ctx: GuardContext, copies: bool = True) -> list[str]:
    """What in `text` looks planted: suspicious items absent from `trusted` text. `copies=False` skips the checks
    for identifiers and runs of words copied from trace inputs (for demonstrations, which are trace data)."""
    trusted_low = trusted.lower()
    found: list[str] = []
    for kind, rx in (("URL", _URL), ("e-mail address", _EMAIL), ("code block", _CODE)):
        for m in rx.finditer(text):
            if m.group(0).lower() not in trusted_low:
                found.append(f"{kind} {m.group(0)!r}")
    for rx in _INJECTION:
        for m in rx.finditer(text):
            if not rx.search(trusted):
                found.append(f"instruction-like phrase {m.group(0)!r}")
    if not copies:
        return list(dict.fromkeys(found))
    trace_low = "\n".join([*ctx.trace_inputs, *ctx.derived_texts]).lower()
    for m in _IDENT.finditer(text):
        tok = m.group(0).lower()
        if tok in trace_low and tok not in trusted_low:
            found.append(f"identifier {m.group(0)!r} copied from trace data")
    windows = ctx.trace_windows()
    if windows:
        words, trusted_words = _norm_words(text), " ".join(_norm_words(trusted))
        for i in range(len(words) - COPY_WINDOW_WORDS + 1):
            win = tuple(words[i:i + COPY_WINDOW_WORDS])
            if win in windows and " ".join(win) not in trusted_words:
                found.append(f"text copied from trace data: {' '.join(win)!r}")
                break
    return list(dict.fromkeys(found))


def check_planted(child: Policy, parent: Policy, ctx: GuardContext) -> GuardResult:
    trusted = ctx.trusted_text(parent)
    found = planted_findings(child.system_prompt, trusted, ctx)
    for m in child.few_shot:  # demonstrations are trace data by nature: only the pattern checks apply
        if m not in parent.few_shot:
            found += planted_findings(m.text(), trusted, ctx, copies=False)
    return GuardResult(name="no_planted_content", passed=not found, reason="; ".join(found[:5]))


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def check_meta_prompt_tags(child: Policy, parent: Policy, ctx: GuardContext) -> GuardResult:
    found = [m.group(0) for m in _META_TAG.finditer(child.system_prompt)
             if m.group(0).lower() not in parent.system_prompt.lower()]
    found = list(dict.fromkeys(found))
    return GuardResult(name="no_meta_prompt_tags", passed=not found,
                       reason="" if not found else "meta-prompt scaffolding copied into the prompt: "
                                                   + ", ".join(map(repr, found[:5])))


def check_constitution(child: Policy, parent: Policy, ctx: GuardContext) -> GuardResult:
    prompt = _squash(child.system_prompt)
    missing = [line for line in ctx.constitution if line.strip() and _squash(line) not in prompt]
    return GuardResult(name="constitution", passed=not missing,
                       reason="" if not missing else "missing must-keep lines: " + "; ".join(map(repr, missing)))


def check_output_contract(child: Policy, parent: Policy, ctx: GuardContext) -> GuardResult:
    reasons = []
    if not ctx.allow_output_contract_change:
        if child.response_format != parent.response_format:
            reasons.append("response_format changed")
        if child.tools != parent.tools:
            reasons.append("tools changed")
        if (child.tool_choice, child.parallel_tool_calls) != (parent.tool_choice, parent.parallel_tool_calls):
            reasons.append("tool_choice changed")
    if child.model != parent.model and child.model not in ctx.allowed_models:
        reasons.append(f"model {child.model!r} is not in the allowed list")
    if not ctx.tune_temperature and (child.temperature, child.top_p) != (parent.temperature, parent.top_p):
        reasons.append("sampling parameters changed but tuning is off")
    return GuardResult(name="output_contract", passed=not reasons, reason="; ".join(reasons))


GUARDS = (check_template_variables, check_not_empty, check_length, check_planted, check_meta_prompt_tags,
          check_constitution, check_output_contract)


def run_guards(child: Policy, parent: Policy, ctx: GuardContext) -> tuple[GuardResult, ...]:
    """Every guard's result for `child` against its `parent` (all are run, so every reason is reported)."""
    return tuple(guard(child, parent, ctx) for guard in GUARDS)


def trace_input_texts(histories: Iterable[Sequence]) -> list[str]:
    """The user/tool message texts of sample histories: the trace data a planted instruction would hide in."""
    out = []
    for history in histories:
        for m in history:
            if getattr(m, "role", None) in ("user", "tool", "function"):
                out.append(m.text())
    return out
