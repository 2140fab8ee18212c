"""`guidelines`: which line of the prompt did the work.

Every build's system prompt is split into guidelines (core/guidelines.py); the target's dictionary (id -> text) is
the union over its builds, each guideline with the build it first appeared in and every build that carries it.
A guideline's measured impact is the latest recorded experiment whose only change is adding that one line (the
test arm has it, the control lacks it): its gain on the metric, CI, p and outcome.

Ablation (`ablate=True`) measures them: for each guideline a build added to its parent (default the production
build), one experiment with the build without that line as the control and the build as the test, on the held-out
split of the run, with the statistics and gate of `evaluate` at alpha / (lines tested) (Bonferroni: the lines are
one family). Accepted: the line did measurable work; refused: no measurable effect at this sample size (a
candidate for removal, against prompt bloat). The worst-case cost is estimated before anything is spent and given
to `on_estimate`; above the budget (`max_calls`, `max_usd`, default evaluate's) it refuses unless `yes`, and with
`yes` it spends at most the budget: the lines left when it is used up are listed as not measured. The build's own
replays are shared through the call cache, so each further line costs only its ablated arm.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from selfimprove.core.errors import UsageError


class Impact(BaseModel):
    experiment: str
    run: str
    outcome: str
    metric: str
    diff: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    n_samples: int = 0


class GuidelineRow(BaseModel):
    id: str
    text: str
    first_build: str | None = None
    builds: list[str] = Field(default_factory=list)
    impact: Impact | None = None


class Ablation(BaseModel):
    build: str
    parent: str | None = None
    estimate: dict[str, Any]
    budget: dict[str, Any]
    alpha_per_line: float
    measured: list[str] = Field(default_factory=list)  # guideline ids
    not_measured: list[str] = Field(default_factory=list)
    spent: dict[str, Any] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)


class GuidelinesReport(BaseModel):
    target: str
    production: str | None = None
    guidelines: list[GuidelineRow]
    ablation: Ablation | None = None


def guidelines(*, root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None,
               run: str | None = None, build: str | None = None, ablate: bool = False, n: int | None = None,
               max_calls: int | None = None, max_usd: float | None = None, concurrency: int | None = None,
               yes: bool = False, wait: bool = False, config: Any = None,
               on_estimate: Callable[[dict[str, Any]], None] | None = None,
               confirm: Callable[[str], bool] | None = None) -> GuidelinesReport:
    """The target's guidelines with their history and measured impact; with `ablate`, measure them first (see
    the module docstring)."""
    from selfimprove.config.load import load_target
    from selfimprove.store import builds as store
    from selfimprove.store.runs import Workspace

    cfg = config if config is not None else load_target(Path(root), target, overrides)
    ws = Workspace(root)
    ablation = None
    if ablate:
        with ws.lock(cfg.target, wait=wait):
            the_run = ws.open_run(cfg.target, run)
            ablation = _ablate(cfg, ws, the_run, build, n=n, max_calls=max_calls, max_usd=max_usd,
                               concurrency=concurrency, yes=yes, on_estimate=on_estimate, confirm=confirm)
    prod = store.production(ws.prompts_dir, cfg.target)
    rows = dictionary(store.list_builds(ws.prompts_dir, cfg.target))
    impacts = measured_impacts(root, cfg)
    for row in rows:
        row.impact = impacts.get(row.id)
    return GuidelinesReport(target=cfg.target, production=prod.name if prod else None, guidelines=rows,
                            ablation=ablation)


def dictionary(builds: list[Any]) -> list[GuidelineRow]:
    """One row per guideline of any build, in order of first appearance."""
    from selfimprove.core.guidelines import split_guidelines

    rows: dict[str, GuidelineRow] = {}
    for b in sorted(builds, key=lambda b: b.version):
        for g in split_guidelines(b.policy.system_prompt):
            row = rows.setdefault(g.id, GuidelineRow(id=g.id, text=g.text, first_build=b.name))
            row.builds.append(b.name)
    return list(rows.values())


def measured_impacts(root: str | Path, cfg: Any) -> dict[str, Impact]:
    """guideline id -> the latest recorded experiment whose only change is adding that guideline."""
    from selfimprove.stages.experiments import list_experiments

    out: dict[str, Impact] = {}
    for e in list_experiments(root=root, config=cfg):
        ch = e.hypothesis.change
        if len(ch.guidelines.added) != 1 or ch.guidelines.removed or ch.params or ch.few_shot_changed:
            continue
        r = e.result
        out[ch.guidelines.added[0].id] = Impact(experiment=e.hypothesis.id, run=e.run, outcome=r.outcome,
                                                metric=r.metric, diff=r.diff, ci=r.ci, p_value=r.p_value,
                                                n_samples=r.n_samples)
    return out


def _ablate(cfg: Any, ws: Any, run: Any, build: str | None, *, n: int | None, max_calls: int | None,
            max_usd: float | None, concurrency: int | None, yes: bool, on_estimate: Any, confirm: Any) -> Ablation:
    from selfimprove.core.guidelines import guideline_change, split_guidelines, without_guideline
    from selfimprove.core.hypothesis import ArmSource
    from selfimprove.dataset.table import load_checkpoint
    from selfimprove.evaluation import inputs
    from selfimprove.stages.experiment import ExperimentOptions, experiment_in_run
    from selfimprove.store import builds as store

    target = store.read_named_build(ws.prompts_dir, cfg.target, store.build_name(build)) if build else \
        store.production(ws.prompts_dir, cfg.target)
    if target is None:
        raise UsageError(f"target '{cfg.target}' has no production build to ablate",
                         hint="promote one first, or name a build with --build v0002")
    parent = store.read_named_build(ws.prompts_dir, cfg.target, target.parent) if target.parent else None
    lines = (guideline_change(parent.policy.system_prompt, target.policy.system_prompt).added if parent
             else split_guidelines(target.policy.system_prompt))
    if not lines:
        raise UsageError(f"{target.name} adds no guideline to {parent.name if parent else 'nothing'}",
                         hint="name another build with --build")
    budget = {"max_calls": max_calls or cfg.evaluate.max_calls, "max_usd": max_usd if max_usd is not None
              else cfg.evaluate.max_usd}
    checkpoint = load_checkpoint(run)
    evals = inputs.included_evals(cfg, checkpoint)
    samples = inputs.load_samples(run, "test")
    order, _ = inputs.order_samples(samples, cfg.split.seed, n, "all", {}, cfg.evaluate.cluster_by)
    ablated = {g.id: target.policy.model_copy(update={"system_prompt": without_guideline(
        target.policy.system_prompt, g.id)}) for g in lines}
    from selfimprove.llm.accounting import PriceTable

    estimate = inputs.estimate(order, target.policy, list(ablated.values()), [e for e in evals if not e.label_only],
                               "replay", PriceTable(cfg.llm.prices))
    estimate["guidelines"] = len(lines)
    if on_estimate is not None:
        on_estimate({"build": target.name, **estimate, "budget": budget})
    _check_budget(estimate, budget, yes, confirm)
    alpha = cfg.evaluate.alpha / len(lines)
    result = Ablation(build=target.name, parent=parent.name if parent else None, estimate=estimate, budget=budget,
                      alpha_per_line=alpha)
    calls, cost = 0, 0.0
    for g in lines:
        left = budget["max_calls"] - calls
        usd_left = None if budget["max_usd"] is None else budget["max_usd"] - cost
        if left <= 0 or (usd_left is not None and usd_left <= 0):
            result.not_measured.append(g.id)
            continue
        run_cfg = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={
            "alpha": alpha, "max_calls": left, "max_usd": usd_left})})
        control = (ArmSource(kind="ablation", ref=f"{target.name} - {g.id}", policy_digest=ablated[g.id].digest),
                   ablated[g.id], target.name)
        test = (ArmSource(kind="build", ref=target.name, policy_digest=target.policy.digest), target.policy,
                target.name)
        options = ExperimentOptions(control=control[0].ref, test=target.name, n=n, concurrency=concurrency,
                                    hypothesis=f"guideline {g.id} of {target.name} does measurable work: {g.text}")
        rep = experiment_in_run(run_cfg, ws, run, options, yes=True, force=False, arms=(control, test))
        calls += int(rep.spent.get("calls", 0))
        cost += float(rep.spent.get("cost_usd", 0.0))
        result.measured.append(g.id)
        result.warnings += [w for w in rep.warnings if w not in result.warnings]
    result.spent = {"calls": calls, "cost_usd": round(cost, 6)}
    return result


def _check_budget(estimate: dict[str, Any], budget: dict[str, Any], yes: bool, confirm: Any) -> None:
    over = []
    if estimate["calls"] > budget["max_calls"]:
        over.append(f"at most {estimate['calls']} calls > budget {budget['max_calls']}")
    if budget["max_usd"] is not None and estimate["cost_usd"] > budget["max_usd"]:
        over.append(f"~${estimate['cost_usd']:.4f} > budget ${budget['max_usd']}")
    if not over or yes or (confirm is not None and confirm(f"{'; '.join(over)}. Spend up to the budget?")):
        return
    raise UsageError(f"the ablation's estimate exceeds the budget: {'; '.join(over)}",
                     hint="pass --yes to spend up to the budget (lines left unmeasured are listed), raise "
                          "--max-calls / --max-usd, or ablate on fewer samples with --n")
