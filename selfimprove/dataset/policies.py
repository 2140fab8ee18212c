"""What snapshot says about the policies it found, beyond choosing one: calls that cannot fill the current
template (left out, counted), plain prompts that look like one unmarked template (a warning saying how to mark
it), templates recorded for another message or call (counted), and invocation parameters replay does not send
(counted, a warning). Pure: parsed spans in, counts, notes and warnings out.
"""

from __future__ import annotations

from collections import Counter

from selfimprove.core.records import Policy
from selfimprove.telemetry.spans import ParsedSpan


def renderable(spans: list[ParsedSpan], policy: Policy) -> tuple[list[ParsedSpan], int]:
    """The spans whose variables can fill the current policy's template (all of them for a plain prompt), and how
    many were left out. The current policy's own calls always can (parse_span checked their rendering)."""
    if policy.template_format is None:
        return spans, 0
    needed = policy.variables
    fit = [s for s in spans if needed <= set(s.variables or {})]
    return fit, len(spans) - len(fit)


def unmarked_templates(spans: list[ParsedSpan]) -> list[str]:
    """A warning per group of plain system prompts that differ only in a few words (an unmarked template)."""
    from selfimprove.core.unmarked_templates import similar_prompt_groups

    used = Counter(s.policy.system_prompt for s in spans if s.policy.template_format is None)
    prompts = [p for p, _n in used.most_common()]
    out = []
    for group in similar_prompt_groups(prompts):
        calls = sum(used[prompts[i]] for i in group.members)
        values = ", ".join(repr(v) for v in group.values[:6]) + (", ..." if len(group.values) > 6 else "")
        out.append(f"{len(group.members)} system prompts ({calls} calls) differ only in a few words ({values}): if "
                   "they are one template rendered per call, each rendering is a separate policy here and promotion "
                   "would ship one rendering to every call. Mark the template where the app renders it: wrap the "
                   "call in openinference's `using_prompt_template(template=..., variables={...}, version=...)` "
                   "(or `selfimprove.tag_policy(policy, variables=...)`), then pull again")
    return out


def unreplayed_params(parsed: list[ParsedSpan], counts: dict[str, int]) -> list[str]:
    """Count the invocation parameters calls set that replay does not send (`unreplayed_param.NAME`: calls), and
    warn about them: the replays of those calls differ from production in that parameter."""
    found = Counter(k for s in parsed for k in s.unreplayed)
    for name, n in found.items():
        counts[f"unreplayed_param.{name}"] = n
    if not found:
        return []
    listed = ", ".join(f"{k} ({n} calls)" for k, n in sorted(found.items()))
    return [(f"production calls set invocation parameters that replay does not send: {listed}; replays of those "
             "calls differ from production in them, so evaluate compares prompts under slightly different settings")]


def template_notes(parsed: list[ParsedSpan], counts: dict[str, int], notes: list[str]) -> None:
    """Count the spans whose recorded prompt template is not their system prompt's (their literal prompt is the
    policy), so a template set for another call or another message is visible, never silently ignored."""
    found = Counter(s.template_note for s in parsed if s.template_note)
    counts["template.elsewhere"] = found["template.elsewhere"]
    counts["template.unmatched"] = found["template.unmatched"]
    if found["template.elsewhere"]:
        notes.append(f"{found['template.elsewhere']} calls carry a prompt template that rendered a user or tool "
                     "message, not the system prompt: their literal system prompt is the policy")
    if found["template.unmatched"]:
        notes.append(f"{found['template.unmatched']} calls carry a prompt template that matches none of their "
                     "messages (set in context for another call?): their literal system prompt is the policy")
