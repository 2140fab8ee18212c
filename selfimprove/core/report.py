"""The evaluation report (`report.json`): the typed evidence a promotion is decided on.

`evaluate` writes it, `promote` gates on it, `log`, `run` and report.html read it; all of them through this model
(never a dict read with `.get()`). Its JSON schema is published as docs/schemas/report.schema.json (generated from
this model by `python -m selfimprove.schemas`; a test keeps the two equal).

What it binds: the split the samples came from (`split`: only "test", the held-out split, can promote), how many
samples were scored (`n_samples`, and `n` per eval), the digests of the inputs (`inputs`: dataset and checkpoint)
and of each evaluated candidate file (`candidates[].candidate_digest`), and the statistics per eval.

Extending it: each part is its own sub-model; add a field with a default to the part it belongs to (a new
statistic to `EvalStats`, a new per-candidate fact to `CandidateEntry`, a new run-level fact to `Report`) and
regenerate the schema. Unknown fields are refused (`extra="forbid"`), so a typo or a stale writer fails loudly.
A change that old reports cannot satisfy bumps `REPORT_SCHEMA`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

REPORT_SCHEMA = "selfimprove.report/2"
HELD_OUT_SPLIT = "test"

Split = Literal["test", "train"]


class Part(BaseModel):
    """Base of every part of the report: immutable, and no field it does not declare."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Sprt(Part):
    """Legacy (reports before the decision test): the per-pair SPRT's outcome. Not written any more."""

    decision: Literal["accept_h1", "accept_h0", "continue"]
    n_used: int
    llr: float | None = None


class DecisionTest(Part):
    """The primary eval's decision test (core.stats.sequential): what it decided, when and why it stopped, its one
    p-value (the gate compares it, Holm-adjusted, with the look's alpha) and the effect corrected for early
    stopping."""

    test: str
    level: float = Field(description="the level this test ran at: alpha / (candidates x planned looks)")
    beta: float
    min_effect: float
    stop: Literal["efficacy", "final", "futility", "exhausted"]
    decision: Literal["accept_h1", "accept_h0", "continue"]
    p_value: float
    llr: float
    n_used: int = Field(description="samples up to the cluster at which the test stopped")
    n_available: int = Field(description="samples planned (the held-out set in evaluation order)")
    clusters_used: int
    clusters_available: int
    estimate: float | None = Field(None, description="mean paired difference over the samples used")
    estimate_corrected: float | None = Field(None, description="the same, corrected for early stopping (Whitehead)")
    reason: str


class EvalStats(Part):
    """One eval's paired comparison, candidate minus baseline: on normalised scores ([0, 1], 1 best, core.scores)
    when `scale` is "normalized", in the eval's own units in older reports."""

    scale: Literal["normalized"] | None = None
    direction: Literal["maximize", "minimize"] = "maximize"
    baseline_mean: float | None = None
    candidate_mean: float | None = None
    diff: float | None = None
    ci: tuple[float, float] | None = Field(None, description="95% CI on `diff` (bootstrap over clusters)")
    n: int = Field(0, description="pairs with a score on both sides")
    n_dropped: int = Field(0, description="pairs left out because one side has no score")
    clusters: int = Field(0, description="clusters (traces) those pairs come from")
    se: float | None = Field(None, description="cluster-robust (CR1) standard error of `diff`")
    wins: int = 0
    ties: int = 0
    losses: int = 0
    p_regression: float | None = Field(None, description="one-sided cluster-robust p of 'this eval dropped' "
                                                          "(the gate Holm-adjusts it over the guardrail evals)")
    test: DecisionTest | None = Field(None, description="the decision test (primary eval only)")
    sign_p: float | None = Field(None, description="legacy: not written any more")
    sprt: Sprt | None = Field(None, description="legacy: not written any more")


class CandidateDecision(Part):
    """What the gate made of one candidate, with the evidence it used: n, clusters, the test, its p before and
    after correction, the level, when and why it stopped, the corrected effect, every reason."""

    passed: bool
    test: str | None = None
    stop: str | None = None
    reason: str | None = None
    n: int | None = None
    n_available: int | None = None
    clusters: int | None = None
    clusters_available: int | None = None
    p_value: float | None = None
    p_adjusted: float | None = None
    level: float | None = None
    estimate: float | None = None
    estimate_corrected: float | None = None
    n_dropped: int | None = None
    reasons: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


class DecisionPlan(Part):
    """How every decision in the report was made (docs/statistics.md)."""

    test: str
    alpha: float
    beta: float
    min_effect: float
    candidates: int = Field(description="candidates compared on the same samples (the Holm family)")
    look: int = Field(description="which look at these comparisons this is (earlier reports counted)")
    looks: int = Field(description="planned looks (gate.looks); each spends alpha / looks")
    level_per_test: float
    cluster_by: str
    correction: str
    regression_checks: str
    scores: str


class Cost(Part):
    """A policy's task calls (successful ones only): cost and tokens per call, median latency."""

    per_call_usd: float | None = None
    tokens_per_call: float | None = None
    latency_ms_p50: float | None = None
    baseline_per_call_usd: float | None = Field(None, description="the baseline's, on the same samples")


class Errors(Part):
    """Calls that failed: the sample's generation, or one judgement of it."""

    generation: int = 0
    judgement: int = 0


class LabelAgreement(Part):
    """A label-only eval (no scores): how often baseline and candidate got the same label, and each side's counts."""

    n: int
    agree: int
    disagree: int
    baseline: dict[str, int] = Field(default_factory=dict)
    candidate: dict[str, int] = Field(default_factory=dict)


class JudgeAgreement(Part):
    """An LLM judge against people's labels of the same name (`human.<name>`) on the same spans: percent
    agreement and Cohen's kappa (selfimprove.core.agreement), with n."""

    judge: str
    human: str
    n: int = Field(description="spans both labelled")
    agree: int
    percent: float | None = Field(description="share of those spans with the same label (0..1)")
    kappa: float | None = Field(description="Cohen's kappa; None when undefined (no spans, or one label only)")
    categories: list[str] = Field(default_factory=list)
    flagged: bool = Field(False, description="kappa below evals.min_judge_kappa on at least "
                                             "evals.min_agreement_pairs spans: a judge people disagree with")


class StoredOnly(Part):
    """An eval that cannot be replayed (people's labels, an eval whose spec was not recorded, e.g. a server-side
    evaluator): its stored production verdicts are feedback for update and a stored baseline here, never part
    of the statistics or the gate."""

    name: str
    why: str
    stored_mean: float | None = Field(None, description="the current policy's production mean on these samples")
    n: int = Field(0, description="samples with a stored score")


class CandidateEntry(Part):
    """One evaluated candidate: what it is (ids and digests) and its evidence (statistics, cost, errors)."""

    id: str
    policy_digest: str
    candidate_digest: str = Field(description="digest of candidates/<id>.json as evaluated")
    passed_guards: bool
    parent: str | None = None
    n_samples: int = Field(description="samples this candidate was scored on (the SPRT may stop early)")
    evals: dict[str, EvalStats]
    cost: Cost = Field(default_factory=Cost)
    errors: Errors = Field(default_factory=Errors)
    pareto: bool = False
    pareto_evals: list[str] = Field(default_factory=list)
    label_agreement: dict[str, LabelAgreement] = Field(default_factory=dict)
    decision: CandidateDecision | None = None


class Baseline(Part):
    """The policy the candidates are compared with: the checkpoint's current policy, replayed or stored."""

    policy_digest: str
    mode: Literal["replay", "stored"]
    n_samples: int = 0
    means: dict[str, float | None] = Field(default_factory=dict)
    cost: Cost = Field(default_factory=Cost)
    errors: Errors = Field(default_factory=Errors)
    pareto: bool = False
    pareto_evals: list[str] = Field(default_factory=list)


class Inputs(Part):
    """Digests of what the samples and the baseline were read from."""

    dataset: str = Field(description="digest of dataset.parquet")
    checkpoint: str = Field(description="digest of checkpoint.json")


class JudgeOverride(Part):
    model: str | None = None
    base_url: str | None = None
    api_key_env: str | None = None


class Settings(Part):
    alpha: float
    beta: float
    min_effect: float
    seed: int
    cluster_by: str = "trace"
    looks: int = 1


class Tags(Part):
    """trivial / discriminative / challenging sample counts, before and after this evaluation."""

    before: dict[str, int] = Field(default_factory=dict)
    after: dict[str, int] = Field(default_factory=dict)


class Report(Part):
    """The report.json document."""

    schema_: Literal["selfimprove.report/2"] = Field(REPORT_SCHEMA, alias="schema")
    target: str
    run: str
    split: Split = Field(description="the split the samples came from; only 'test' (held out) can promote")
    n_samples: int = Field(description="distinct samples scored")
    inputs: Inputs
    primary_eval: str
    evals: list[str] = Field(default_factory=list, description="the scored evals (statistics, Pareto, gate)")
    label_only_evals: list[str] = Field(default_factory=list)
    baseline: Baseline
    judge_override: JudgeOverride | None = None
    candidates: list[CandidateEntry] = Field(default_factory=list)
    best: str | None = None
    verdicts: dict[str, dict[str, str]] = Field(default_factory=dict)
    calls: int = 0
    cost_usd: float = 0.0
    stopped: str | None = Field(None, description="why scoring ended: decided, exhausted, budget, unavailable")
    settings: Settings
    tags: Tags = Field(default_factory=Tags)
    stored_only: list[StoredOnly] = Field(default_factory=list, description="evals not replayed: people cannot be "
                                          "replayed, so the gate uses the replayable evals")
    human_agreement: list[JudgeAgreement] = Field(default_factory=list, description="each LLM judge against "
                                                  "people's labels on these samples' production verdicts")
    decision: DecisionPlan | None = Field(None, description="how the decisions were made: the test, the "
                                          "corrections, the clusters, the score scale")

    model_config = ConfigDict(frozen=True, extra="forbid", validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)

    @property
    def held_out(self) -> bool:
        return self.split == HELD_OUT_SPLIT

    def entry(self, candidate_id: str | None) -> CandidateEntry | None:
        return next((c for c in self.candidates if c.id == candidate_id), None)

    def document(self) -> dict:
        """The JSON-ready document as written to report.json."""
        return self.model_dump(mode="json")


def report_filename(split: str, stem: str = "report", suffix: str = ".json") -> str:
    """`report.json` for the held-out split, `report.train.json` (and so on) for any other: evidence from another
    split never takes the held-out report's place."""
    return f"{stem}{suffix}" if split == HELD_OUT_SPLIT else f"{stem}.{split}{suffix}"
