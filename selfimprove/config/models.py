"""The target config: pydantic models with the defaults a new user gets from `selfimprove init`.

Keys hold the *name* of an environment variable, never a secret value: `api_key_env = "OPENAI_API_KEY"`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeFloat,
    field_validator,
    model_validator,
)

from selfimprove.core.secrets import is_env_var_name

ENV_NAME_ERROR = "must be the NAME of an environment variable (e.g. OPENAI_API_KEY), never a key"


def env_var_name(value: str | None) -> str | None:
    """Validator of every `api_key_env`: a name, not a key (the key itself is never echoed back)."""
    if value is not None and not is_env_var_name(value):
        raise ValueError(ENV_NAME_ERROR)
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PhoenixSource(Section):
    endpoint: str = "http://127.0.0.1:6006"
    project: str = "default"
    span_filter: str = "span_kind == 'LLM'"
    api_key_env: str | None = None
    page_size: int = Field(20000, gt=0, description="spans per request; pages are time windows")
    timeout_s: float = Field(120.0, gt=0, description="seconds one request may wait for an answer")
    give_up_after_s: float = Field(300.0, gt=0, description="seconds to wait for one answer, retries included, "
                                                            "before pull gives up")
    experiments: bool | None = Field(None, description="record `experiment` runs in Phoenix (the held-out split "
                                     "as a dataset, each arm as an experiment); unset: on when telemetry.source "
                                     "is phoenix")

    _name = field_validator("api_key_env")(env_var_name)


class ArizeSource(Section):
    space_id: str = ""
    project: str = Field("", validation_alias=AliasChoices("project", "model_id"),
                         description="the tracing project's name (arize 8's project_name; model_id before)")
    api_key_env: str = "ARIZE_API_KEY"

    _name = field_validator("api_key_env")(env_var_name)


class FileSource(Section):
    path: str = ""


class SelfTrace(Section):
    """Dogfooding: trace selfimprove's own optimizer, judge and replay calls to Phoenix (off by default)."""

    enabled: bool = False
    endpoint: str | None = Field(None, description="Phoenix base URL (default: telemetry.phoenix.endpoint)")
    project: str | None = Field(None, description="Phoenix project (default: selfimprove-<target>)")


class Telemetry(Section):
    source: Literal["phoenix", "arize", "file"] = "phoenix"
    self_trace: SelfTrace = SelfTrace()
    phoenix: PhoenixSource = PhoenixSource()
    arize: ArizeSource = ArizeSource()
    file: FileSource = FileSource()


class Endpoint(Section):
    """An OpenAI-compatible endpoint. `api_key_env` names the variable that holds the key."""

    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    model: str | None = None
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0, description="retries of a timeout, 5xx or dropped connection")
    rate_limit_wait_s: float = Field(300.0, gt=0, description="how long one call may wait out rate limits (429s, "
                                     "Retry-After honoured, concurrency lowered) before its row counts as failed")

    _name = field_validator("api_key_env")(env_var_name)


class Price(Section):
    input: float = Field(0.0, ge=0, description="US dollars per million input tokens")
    output: float = Field(0.0, ge=0, description="US dollars per million output tokens")
    batch_input: float | None = Field(None, ge=0, description="... through the Batch API (default: half of input)")
    batch_output: float | None = Field(None, ge=0, description="... through the Batch API (default: half of "
                                                                 "output)")


class Batch(Section):
    """[llm.batch]: replays and judge calls through the provider's Batch API (docs/batch.md): half price, large
    files, asynchronous (a batch may take up to 24 hours); the call cache still answers what it holds."""

    enabled: bool = Field(False, description="evaluate and update send replays and judge calls as batches "
                                             "(--batch / --no-batch override it per command)")
    wave: int = Field(200, ge=1, description="held-out samples per wave in evaluate: one batch of replays, then one "
                                             "of judge calls; the sequential test looks between waves")
    poll_s: float = Field(30.0, gt=0, description="seconds between status checks of a running batch")
    gather_s: float = Field(0.5, gt=0, description="a batch goes out once no request has joined it for this long")
    max_retries: int = Field(2, ge=0, description="follow-up batches for the lines a batch failed (5xx, expired)")


class LLMs(Section):
    task: Endpoint = Endpoint()
    optimizer: Endpoint = Endpoint(model="gpt-4.1")
    judge: Endpoint | None = None
    prices: dict[str, Price] = Field(default_factory=dict)
    batch: Batch = Batch()


class Evals(Section):
    include: list[str] = Field(default_factory=list, description="evals that count; empty = all found")
    primary: str | None = None
    min_judge_kappa: float = Field(0.4, ge=-1, le=1, description="flag an LLM judge whose Cohen's kappa with the "
                                   "human labels (human.NAME) on the same spans is below this (0.41-0.60: "
                                   "moderate agreement, Landis & Koch)")
    min_agreement_pairs: int = Field(10, ge=1, description="fewer spans labelled by both: shown, not flagged")


class Join(Section):
    """How eval annotations reach the LLM spans they are about (apps that log evals on a chain/agent parent span or
    the trace root). Modes: span (own span only), parent (the direct parent only), root (the trace root only),
    trace (a trace-level annotation only), auto (own span, else the nearest annotated ancestor, else the
    trace's)."""

    default: Literal["auto", "span", "parent", "root", "trace"] = "auto"
    evals: dict[str, Literal["auto", "span", "parent", "root", "trace"]] = Field(
        default_factory=dict, description="per eval name, e.g. {correctness = 'root'}; others use `default`")
    span_name: str | None = Field(None, description="when an annotated ancestor covers several LLM spans: prefer "
                                  "the spans of this name")
    metadata: dict[str, str] = Field(default_factory=dict, description="... and with this metadata")
    pick: Literal["first", "last"] = Field("last", description="... then the first or the last by start time")


class Split(Section):
    test_size: float = Field(0.3, gt=0, lt=1)
    seed: int = 0
    max_samples: int | None = Field(None, gt=0)
    diverse: bool = False
    embeddings: Endpoint | None = Field(None, description="[split.embeddings]: the OpenAI-compatible endpoint whose "
                                        "embeddings --diverse clusters and update's failure modes are "
                                        "clustered by (model default text-embedding-3-small); absent: TF-IDF, no "
                                        "network")
    filters: list[str] = Field(default_factory=list, description="snapshot filter chain, e.g. 'model=gpt-4o-mini', "
                               "'score.correctness<0.5', 'metadata.tenant=acme' (--filter adds to it)")
    min_policy_samples: int = Field(30, ge=0, description="snapshot warns when the current policy holds fewer "
                                    "samples than this: too few to learn from or to prove a gain on held-out data")


class Update(Section):
    optimizer: Literal["builtin", "gepa"] = "builtin"
    trials: int = Field(3, ge=1)
    minibatch: int = Field(8, ge=1)
    rounds: int = Field(2, ge=1)
    population: int = Field(4, ge=1)
    temperature: float = Field(0.7, ge=0)
    max_calls: int = Field(400, ge=1)
    max_growth: float = Field(2.0, gt=1, description="candidate length cap relative to its parent")
    constitution: list[str] = Field(default_factory=list, description="lines every candidate must keep")
    allowed_models: list[str] = Field(default_factory=list)
    tune_temperature: bool = False
    allow_output_contract_change: bool = False
    critique: bool = Field(False, description="one generated critique per minibatch sample before each update")
    metaprompt: Literal["full", "compact"] = Field("full", description="the builtin optimizer's update request: "
                                                   "'full' (reasoning, edits, merge) or 'compact' (the current prompt, "
                                                   "the checks and the failures' explanations only: for small "
                                                   "optimizer models that copy the full request's scaffolding)")
    weights: dict[str, NonNegativeFloat] = Field(default_factory=dict, description="eval -> weight (>= 0) in the optimizer's "
                                      "reward; an eval not named weighs 1")
    guardrails: list[str] = Field(default_factory=list, description="evals a candidate may not regress on to become "
                                  "the incumbent (a paired drop of more than one standard error on validation), "
                                  "whatever it gains elsewhere")


class Evaluate(Section):
    concurrency: int = Field(32, ge=1)
    max_calls: int = Field(2000, ge=1)
    max_usd: float | None = Field(None, ge=0)
    baseline: Literal["replay", "stored"] = "replay"
    alpha: float = Field(0.05, gt=0, lt=1)
    beta: float = Field(0.05, gt=0, lt=1, description="the sequential test's futility error: its power is at most "
                                                      "1 - beta")
    min_effect: float = Field(0.15, gt=0, le=1)
    bootstrap_resamples: int = Field(2000, ge=100)
    cluster_by: Literal["trace", "sample"] = Field("trace", description="the unit of independence: samples of one "
                                                   "trace are resampled and tested together")


class Gate(Section):
    min_improvement: float = Field(0.02, ge=0)
    max_regression: dict[str, float] = Field(default_factory=dict, description="per eval; default below")
    default_max_regression: float = Field(0.02, ge=0)
    max_cost_per_call_usd: float | None = Field(None, ge=0)
    looks: int = Field(1, ge=1, description="planned looks at one candidate against one baseline (e.g. nightly "
                                            "re-evaluations); each spends evaluate.alpha / looks")
    max_failed_pairs: float = Field(0.05, ge=0, le=1, description="refuse when a larger share of the held-out "
                                                                   "pairs was lost to failed calls")


class Trigger(Section):
    """When `selfimprove run` spends on an update at all (the seeds' "when to self-improve")."""

    min_new_samples: int = Field(20, ge=0, description="skip the update with fewer new samples than this")
    skip_above_score: float | None = Field(None, description="skip when the current policy's mean primary score "
                                                             "on the new samples is at least this")


class RolloutSettings(Section):
    """How `rollout status` and `run` judge a rollout online (`selfimprove rollout start`)."""

    min_samples: int = Field(30, ge=2, description="judged calls each arm needs before the online evidence may "
                             "promote or roll back")
    floor: float = Field(0.05, ge=0, le=0.5, description="the least traffic share a bandit leaves either arm")
    auto: bool = Field(True, description="promote the challenger, or roll it back, as soon as the online evidence "
                       "decides (false: status only reports the decision)")


class MonitorSettings(Section):
    """`run` compares production's online score on the newly pulled calls with the held-out score its build was
    promoted on (the seeds' "notice when production degrades")."""

    margin: float = Field(0.05, ge=0, description="a drop larger than this (normalised score), significant at "
                          "evaluate.alpha, is a regression")
    min_samples: int = Field(20, ge=2, description="fewer judged production calls: no verdict")
    on_regression: Literal["report", "update", "rollback"] = Field(
        "report", description="what run does on a regression: report it (exit 5), also go on to update (ignoring "
        "the trigger), or also move production back to the build's parent")


class TargetConfig(Section):
    """One LLM call site: where its spans are, which evals count, how to improve, evaluate and gate it."""

    target: str
    extends: str | None = None
    telemetry: Telemetry = Telemetry()
    evals: Evals = Evals()
    join: Join = Join()
    llm: LLMs = LLMs()
    split: Split = Split()
    update: Update = Update()
    evaluate: Evaluate = Evaluate()
    gate: Gate = Gate()
    trigger: Trigger = Trigger()
    rollout: RolloutSettings = RolloutSettings()
    monitor: MonitorSettings = MonitorSettings()

    @field_validator("target")
    @classmethod
    def _identifier(cls, v: str) -> str:
        if not v or not all(c.isalnum() or c in "-_." for c in v) or v.startswith("."):
            raise ValueError("must be a name of letters, digits, '-', '_' or '.'")
        return v

    @model_validator(mode="after")
    def _primary_is_included(self) -> TargetConfig:
        if self.evals.primary and self.evals.include and self.evals.primary not in self.evals.include:
            raise ValueError(f"evals.primary {self.evals.primary!r} is not in evals.include")
        return self


def with_batch(cfg: TargetConfig, batch: bool | None) -> TargetConfig:
    """`cfg` with `llm.batch.enabled` set to `batch` (the --batch / --no-batch flags); None leaves it as configured."""
    if batch is None or batch == cfg.llm.batch.enabled:
        return cfg
    llm = cfg.llm.model_copy(update={"batch": cfg.llm.batch.model_copy(update={"enabled": batch})})
    return cfg.model_copy(update={"llm": llm})
