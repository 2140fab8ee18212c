"""`rollout start | status | stop`: prove a build on a share of production traffic, then promote or roll back.

Contract:
- `start_rollout` makes the first revision of a rollout (store/rollouts.py): the **champion** is production (or,
  when the challenger *is* production, its parent build, and the production ref moves back to it: the challenger
  has to earn production online), the **challenger** the named build. Fixed share (`share`, default 0.1) or a
  bandit (`thompson`, `ucb`) that starts 50/50. `key_field` names the call attribute that keys a sticky
  assignment (the app passes it to `load_policy(key=...)`). One active rollout per target.
- `rollout_status` (optionally pulling first; a Phoenix that cannot be reached is an error naming it) reads every
  judged call the app tagged with this rollout (dataset/online.py), each arm's online primary score with a
  cluster-robust interval (clustered by key), and the decision (core/online.py). With `apply` (and
  `[rollout] auto`): **promote** moves production to the challenger; **rollback** leaves production on the
  champion (moving it back if needed); both end the rollout; **continue** records the new bandit shares. Each
  change is a new revision, and each ref move is in the ref log with the rollout's id.
- `stop_rollout` ends an active rollout; production stays the champion.
- Every write holds the target's lock. Nothing here writes to the terminal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel

from selfimprove.core.errors import NothingNew, UsageError

ROLLOUT_RESULT_SCHEMA = "selfimprove.rollout/1"


class ArmStatus(BaseModel):
    arm: str
    build: str
    share: float
    n: int = 0
    clusters: int = 0
    mean: float | None = None
    ci: tuple[float, float] | None = None


class RolloutResult(BaseModel):
    target: str
    action: str  # started | continue | promoted | rolled back | stopped | inactive
    rollout: str
    revision: int
    mode: str
    status: str
    key_field: str | None = None
    production: str | None = None
    arms: list[ArmStatus] = []
    primary: str | None = None
    decision: dict[str, Any] | None = None
    pulled: str | None = None
    untagged: int = 0  # judged calls in the window that name no arm of this rollout
    phoenix: dict[str, Any] | None = None


def _shares(mode: str, share: float | None, totals: dict[str, Any], floor: float, seed: int = 0) -> dict[str, float]:
    from selfimprove.core.bandit import ArmTotals, thompson_shares, ucb_shares

    if mode == "share":
        return {"challenger": share, "champion": 1.0 - share}
    arms = {a: totals.get(a) or ArmTotals() for a in ("challenger", "champion")}
    fn = thompson_shares if mode == "thompson" else ucb_shares
    out = fn(arms, floor=floor, **({"seed": seed} if mode == "thompson" else {}))
    out["champion"] = 1.0 - out["challenger"]  # exactly 1
    return out


def start_rollout(*, root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None,
                  challenger: str, share: float | None = None, bandit: str | None = None,
                  key_field: str | None = None, push_phoenix: bool = False, wait: bool = False) -> RolloutResult:
    from selfimprove.config.load import load_target
    from selfimprove.core.rollout import ArmRef, Rollout
    from selfimprove.store import builds as store
    from selfimprove.store.rollouts import read_log, write_revision
    from selfimprove.store.runs import Workspace

    if share is not None and bandit is not None:
        raise UsageError("give --share or --bandit, not both")
    if bandit not in (None, "thompson", "ucb"):
        raise UsageError(f"--bandit must be thompson or ucb, not {bandit!r}")
    if share is not None and not 0 < share < 1:
        raise UsageError(f"--share must be between 0 and 1 (exclusive), got {share}")
    cfg = load_target(Path(root), target, overrides)
    ws = Workspace(root)
    with ws.lock(cfg.target, wait=wait):
        log = read_log(ws.prompts_dir, cfg.target)
        if log and log[-1].active:
            raise UsageError(f"rollout {log[-1].id} of '{cfg.target}' is still active",
                             hint="`selfimprove rollout stop` ends it first")
        chall = store.read_named_build(ws.prompts_dir, cfg.target, store.build_name(challenger))
        prod = store.production(ws.prompts_dir, cfg.target)
        if prod is None:
            raise UsageError(f"target '{cfg.target}' has no production build to compare with",
                             hint="promote a first build (`selfimprove promote`)")
        champion = prod
        if prod.name == chall.name:
            if chall.parent is None:
                raise UsageError(f"{chall.name} is production and has no parent build to roll out against",
                                 hint="roll out a build other than production")
            champion = store.read_named_build(ws.prompts_dir, cfg.target, chall.parent)
        mode = bandit or "share"
        revision = len(log) + 1
        rollout_id = f"r{revision:04d}-{chall.name}"
        doc = Rollout(target=cfg.target, id=rollout_id, revision=revision, parent=log[-1].digest if log else None,
                      champion=ArmRef(build=champion.name, digest=champion.digest),
                      challenger=ArmRef(build=chall.name, digest=chall.digest), mode=mode,
                      shares=_shares(mode, 0.1 if share is None else share, {}, cfg.rollout.floor),
                      floor=cfg.rollout.floor, key_field=key_field, event="start",
                      reason=f"{chall.name} against {champion.name}")
        if champion.name != prod.name:
            store.move_ref(ws.prompts_dir, champion, reason=f"rollout {rollout_id}: {champion.name} serves as "
                           f"champion while {chall.name} is proven online")
        write_revision(ws.prompts_dir, doc)
    phoenix = None
    if push_phoenix:
        if champion.name != prod.name:  # production moved back: so does the Phoenix production tag
            _push(cfg, champion, "production", f"rollout {rollout_id}: champion")
        phoenix = _push(cfg, chall, "challenger", f"rollout {rollout_id}")
    return _result(doc, "started", champion.name, phoenix=phoenix)


def stop_rollout(*, root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None,
                 reason: str = "", wait: bool = False) -> RolloutResult:
    from selfimprove.config.load import load_target
    from selfimprove.store.builds import production
    from selfimprove.store.rollouts import active, write_revision
    from selfimprove.store.runs import Workspace

    cfg = load_target(Path(root), target, overrides)
    ws = Workspace(root)
    with ws.lock(cfg.target, wait=wait):
        current = active(ws.prompts_dir, cfg.target)
        if current is None:
            raise UsageError(f"target '{cfg.target}' has no active rollout", hint="`selfimprove rollout status`")
        doc = current.next(status="stopped", event="stop", reason=reason or "stopped by hand")
        write_revision(ws.prompts_dir, doc)
        prod = production(ws.prompts_dir, cfg.target)
    return _result(doc, "stopped", prod.name if prod else None)


def rollout_status(*, root: str | Path = ".", target: str | None = None, overrides: list[str] | None = None,
                   pull: bool = True, apply: bool = True, push_phoenix: bool = False, wait: bool = False,
                   on_progress: Any = None) -> RolloutResult:
    """Each arm's online evidence and the decision; see the module docstring."""
    from selfimprove.config.load import load_target
    from selfimprove.store.builds import production
    from selfimprove.store.rollouts import read_current
    from selfimprove.store.runs import Workspace

    cfg = load_target(Path(root), target, overrides)
    ws = Workspace(root)
    current = read_current(ws.prompts_dir, cfg.target)
    if current is None:
        raise UsageError(f"target '{cfg.target}' never had a rollout",
                         hint="`selfimprove rollout start --challenger vNNNN`")
    prod = production(ws.prompts_dir, cfg.target)
    if not current.active:
        return _result(current, "inactive", prod.name if prod else None)
    pulled = None
    if pull:
        from selfimprove.stages.pull import pull as run_pull

        try:
            got = run_pull(root=root, target=target, overrides=overrides, wait=wait, on_progress=on_progress)
            pulled = f"{got.spans} spans, {got.annotations} annotations into {got.run}"
        except NothingNew as exc:
            pulled = exc.message
    return decide_rollout(ws, cfg, apply=apply and cfg.rollout.auto, push_phoenix=push_phoenix, wait=wait,
                          pulled=pulled)


def decide_rollout(ws: Any, cfg: Any, *, apply: bool, push_phoenix: bool = False, wait: bool = False,
                   pulled: str | None = None) -> RolloutResult:
    """The online evidence of the active rollout and, with `apply`, its consequence (used by status and run)."""
    from selfimprove.core.bandit import ArmTotals
    from selfimprove.core.online import arm_evidence, online_decision
    from selfimprove.dataset.online import target_calls
    from selfimprove.store import builds as store
    from selfimprove.store.rollouts import active, write_revision

    current = active(ws.prompts_dir, cfg.target)
    if current is None:
        raise UsageError(f"target '{cfg.target}' has no active rollout")
    calls, primary = target_calls(ws, cfg, key_field=current.key_field)
    mine = [c for c in calls if c.rollout == current.id and c.arm in ("champion", "challenger")
            and c.score is not None]
    untagged = sum(1 for c in calls if c.score is not None and c.rollout != current.id)
    evidence, totals = {}, {}
    for arm in ("champion", "challenger"):
        rows = [c for c in mine if c.arm == arm]
        evidence[arm] = arm_evidence(current.arm(arm).build, [c.score for c in rows], [c.key for c in rows])
        totals[arm] = ArmTotals(n=len(rows), total=sum(c.score for c in rows))
    decision = online_decision(evidence["champion"], evidence["challenger"],
                               min_improvement=cfg.gate.min_improvement, alpha=cfg.evaluate.alpha,
                               min_samples=cfg.rollout.min_samples)
    facts = decision.model_dump(mode="json")
    doc, action, phoenix = current, "continue", None
    if apply:
        with ws.lock(cfg.target, wait=wait):
            if decision.action == "promote":
                build = store.read_named_build(ws.prompts_dir, cfg.target, current.challenger.build)
                store.move_ref(ws.prompts_dir, build, reason=f"rollout {current.id}: promoted online; "
                               + "; ".join(decision.reasons))
                doc, action = current.next(status="promoted", event="promote", reason="; ".join(decision.reasons),
                                           arms=totals, decision=facts), "promoted"
            elif decision.action == "rollback":
                champ = store.read_named_build(ws.prompts_dir, cfg.target, current.champion.build)
                prod = store.production(ws.prompts_dir, cfg.target)
                if prod is None or prod.name != champ.name:
                    store.move_ref(ws.prompts_dir, champ, reason=f"rollout {current.id}: rolled back")
                doc, action = current.next(status="rolled back", event="rollback", reason="; ".join(decision.reasons),
                                           arms=totals, decision=facts), "rolled back"
            elif totals != dict(current.arms):
                shares = _shares(current.mode, current.shares["challenger"], totals, current.floor,
                                 seed=current.revision)
                doc = current.next(shares=shares, event="shares", reason="; ".join(decision.reasons),
                                   arms=totals, decision=facts)
            if doc is not current:
                write_revision(ws.prompts_dir, doc)
        if action == "promoted" and push_phoenix:
            phoenix = _push(cfg, build, "production", f"rollout {current.id}")
    prod = store.production(ws.prompts_dir, cfg.target)
    return _result(doc, action, prod.name if prod else None, evidence=evidence, primary=primary, decision=facts,
                   pulled=pulled, untagged=untagged, phoenix=phoenix)


def rollout_in_run(ws: Any, cfg: Any, result: Any, step: Any, t0: float, *, dry_run: bool, push_phoenix: bool) -> str:
    """`run` with an active rollout: it decides as `rollout status` does (run has pulled already), the loop's
    result records it and one step; returns run's outcome. No update while a rollout runs."""
    rolled = decide_rollout(ws, cfg, apply=cfg.rollout.auto and not dry_run, push_phoenix=push_phoenix)
    result.rollout = rolled.model_dump(mode="json")
    result.production = rolled.production
    arms = ", ".join(f"{a.build} {a.mean:.3f} (n={a.n})" if a.mean is not None else f"{a.build} (n={a.n})"
                     for a in rolled.arms)
    reasons = "; ".join((rolled.decision or {}).get("reasons") or [])
    step("rollout", rolled.action, f"{rolled.rollout}: {arms}; {reasons}", t0)
    return {"promoted": "rollout promoted", "rolled back": "rolled back"}.get(rolled.action, "rollout continues")


def _result(doc: Any, action: str, production: str | None, evidence: dict | None = None, **extra: Any
            ) -> RolloutResult:
    arms = []
    for arm in ("champion", "challenger"):
        ev = (evidence or {}).get(arm)
        arms.append(ArmStatus(arm=arm, build=doc.arm(arm).build, share=doc.shares[arm],
                              **({} if ev is None else {"n": ev.n, "clusters": ev.clusters, "mean": ev.mean,
                                                        "ci": ev.ci})))
    return RolloutResult(target=doc.target, action=action, rollout=doc.id, revision=doc.revision, mode=doc.mode,
                         status=doc.status, key_field=doc.key_field, production=production, arms=arms, **extra)


def _push(cfg: Any, build: Any, tag: str, note: str) -> dict[str, Any]:
    from selfimprove.telemetry.phoenix_prompts import client, push_build

    px_cfg = cfg.telemetry.phoenix
    return push_build(client(px_cfg.endpoint, px_cfg.api_key_env), build, tag=tag, note=note)
