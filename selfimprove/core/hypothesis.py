"""An experiment's typed records: the hypothesis (what is tested, against what, how) and its result.

A hypothesis names two arms — the control and the test policy, each with where it came from (`production`, a
build, a policy file, a candidate of the run) and its policy digest — the change between them (guidelines added
and removed, parameters changed), the metric (the primary eval), the method, the expected improvement and its
parent (the build or policy the control is). Its id is `h-` and 12 hex digits of the digest of everything that
decides the measurement (arms, metric, split, expected effect), so the same experiment asked twice is the same
record and a re-run is reused; the free-text description is not part of it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from selfimprove.core.canonical import digest, short
from selfimprove.core.guidelines import GuidelineChange, guideline_change
from selfimprove.core.records import Policy, Record

HYPOTHESIS_SCHEMA = "selfimprove.hypothesis/1"
EXPERIMENTS_FOLDER = "experiments"
RESULT_SCHEMA = "selfimprove.experiment/1"

ArmKind = Literal["production", "build", "file", "candidate", "ablation"]
Outcome = Literal["accepted", "refused"]

# the policy fields a one-parameter experiment changes (everything but the prompt and the demonstrations)
_PARAMS = ("model", "temperature", "top_p", "max_tokens", "response_format", "tools", "tool_choice",
           "parallel_tool_calls", "template_format")


class ArmSource(Record):
    """Where an arm's policy came from: its kind, the reference given (a build name, a file path, a candidate
    id, `production`, or for an ablation `<build> - <guideline id>`), the `--*-set` overrides applied to it, and the resulting policy's digest."""

    kind: ArmKind
    ref: str
    overrides: tuple[str, ...] = ()
    policy_digest: str


class PolicyChange(Record):
    """Control → test: guidelines added and removed, parameters changed ({field: [control, test]}), and whether
    the few-shot demonstrations differ."""

    guidelines: GuidelineChange = GuidelineChange()
    params: dict[str, tuple[Any, Any]] = Field(default_factory=dict)
    few_shot_changed: bool = False

    @property
    def empty(self) -> bool:
        return self.guidelines.empty and not self.params and not self.few_shot_changed


def policy_change(control: Policy, test: Policy) -> PolicyChange:
    a, b = control.model_dump(mode="json"), test.model_dump(mode="json")
    params = {k: (a.get(k), b.get(k)) for k in _PARAMS if a.get(k) != b.get(k)}
    return PolicyChange(guidelines=guideline_change(control.system_prompt, test.system_prompt), params=params,
                        few_shot_changed=a.get("few_shot") != b.get("few_shot"))


class Hypothesis(Record):
    """"The test arm beats the control on `metric` by at least `expected_effect`", and how it is measured."""

    id: str
    description: str = ""
    control: ArmSource
    test: ArmSource
    change: PolicyChange
    metric: str
    split: str
    expected_effect: float | None = None
    method: str
    parent: str | None = None


def experiment_dir(hid: str) -> str:
    """An experiment's folder in its run: `experiments/<id>` (its stage is `experiment.<id>`)."""
    return f"{EXPERIMENTS_FOLDER}/{hid}"


def hypothesis_id(control: ArmSource, test: ArmSource, metric: str, split: str,
                  expected_effect: float | None) -> str:
    key = {"control": control.policy_digest, "test": test.policy_digest, "metric": metric, "split": split,
           "expected_effect": expected_effect}
    return "h-" + short(digest(key))


class ExperimentResult(Record):
    """What the experiment found: accepted (the gate `evaluate` applies passed) or refused, with every reason,
    and the primary metric's evidence (normalised means, difference, its CI, the decision test's p, samples)."""

    hypothesis: str
    outcome: Outcome
    reasons: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    metric: str
    n_samples: int
    control_mean: float | None = None
    test_mean: float | None = None
    diff: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    stop: str | None = None
    expected_effect: float | None = None
    report: str  # the report document's path in the run folder
    report_digest: str
