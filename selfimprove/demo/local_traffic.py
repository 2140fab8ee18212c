"""Production for the local-model task (selfimprove.demo.local_task): traced calls to the local task model, judged by
the code evals and logged to Phoenix; then the LLM-judge probe on a few of the same replies.

The probe runs phoenix-evals with `max_retries=0` and `exit_on_error=False`: a reply the judge model answers with
something unparseable is one failed row, counted under its reason (the exception's type and first words), never
retried ten times and never dropped. Each reply is judged with two schemas (explanation then label, and the label
alone); parsed + failed == judgments, always.
"""

from __future__ import annotations

import contextlib
import io
import json
import time
from collections import Counter
from typing import Any

from selfimprove.demo.local_task import JUDGE_MODEL, WEAK_PROMPT, WORLD, code_evaluators, llm_judge, policy


def make_local_traffic(n: int, *, phoenix_url: str, project: str, task_url: str, judge_url: str | None = None,
                       judge_rows: int = 4, seed: int = 0, system_prompt: str = WEAK_PROMPT) -> dict[str, Any]:
    """`n` production calls of `system_prompt` on the local task model at `task_url`, judged by the code evals and
    annotated in Phoenix `project` (selfimprove.sim.traffic.make_traffic's result); with `judge_url`, also
    `llm_judge`: the probe's counts on the first `judge_rows` replies."""
    from selfimprove.sim.traffic import make_traffic

    made = make_traffic(WORLD, n, phoenix_url=phoenix_url, project=project, sim_base_url=task_url,
                        policy=policy(system_prompt), seed=seed, evaluators=code_evaluators(), timeout=300)
    if judge_url and judge_rows:
        made["llm_judge"] = probe_llm_judge(made["replies"][:judge_rows], judge_url)
    return made


PROBE_SCHEMAS = {"explained": True, "label_only": False}  # phoenix-evals' default schema, and the label alone


def probe_llm_judge(replies: list[dict[str, str]], base_url: str, model: str = JUDGE_MODEL) -> dict[str, Any]:
    """Judge `replies` ({input, output}) with the LLM judge at `base_url`, once with phoenix-evals' default
    schema (an explanation, then the label) and once asking for the label alone: {rows, judgments, parsed,
    failed, reasons: {"schema: reason": count}, labels: {"schema: label": count}, by_schema: {schema: {parsed,
    failed}}, seconds}. A small model often never closes its explanation (counted, under its reason); the label
    alone usually parses."""
    import pandas as pd
    import phoenix.evals as px_evals

    started = time.monotonic()
    frame = pd.DataFrame([{"input": r["input"], "output": r["output"]} for r in replies])
    evaluators = [llm_judge(base_url, model, explain=explain, name=f"helpful_{schema}")
                  for schema, explain in PROBE_SCHEMAS.items()]
    with contextlib.redirect_stdout(io.StringIO()):  # phoenix-evals tqdm.writes each failure to stdout; counted below
        judged = px_evals.evaluate_dataframe(dataframe=frame, evaluators=evaluators, hide_tqdm_bar=True,
                                             exit_on_error=False, max_retries=0)
    labels: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    by_schema = {}
    for schema in PROBE_SCHEMAS:
        parsed = failed = 0
        for _, row in judged.iterrows():
            score = _as_dict(row.get(f"helpful_{schema}_score"))
            label = score.get("label") if score else None
            if label in ("helpful", "unhelpful"):
                labels[f"{schema}: {label}"] += 1
                parsed += 1
            else:
                reasons[f"{schema}: {_reason(row.get(f'helpful_{schema}_execution_details'), label)}"] += 1
                failed += 1
        by_schema[schema] = {"parsed": parsed, "failed": failed}
    return {"rows": len(frame), "judgments": len(frame) * len(PROBE_SCHEMAS), "parsed": sum(labels.values()),
            "failed": sum(reasons.values()), "reasons": dict(reasons), "labels": dict(labels),
            "by_schema": by_schema, "seconds": round(time.monotonic() - started, 1)}


def _as_dict(value: Any) -> dict[str, Any] | None:
    if value is None or isinstance(value, float):  # pandas fills a missing score with NaN
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    return value if isinstance(value, dict) else None


def _reason(details: Any, label: Any) -> str:
    """A short, stable reason: the exception's type and first words, or the label that is not a choice."""
    info = _as_dict(details) or {}
    exceptions = info.get("exceptions") or []
    if exceptions:
        first = str(exceptions[0])
        return " ".join(first.split()[:6])[:80]
    if label is not None:
        return f"label {str(label)[:30]!r} is not a choice"
    return f"no score ({info.get('status', 'unknown status')})"
