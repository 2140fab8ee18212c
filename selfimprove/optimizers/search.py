"""The candidate population and per-sample Pareto parent selection (GEPA's idea) on a validation slice of train.

Every member is scored on the same validation samples. A member is on the front when it is among the best on at
least one sample and no other member dominates it (at least as good everywhere, better somewhere). Parents are
drawn from the front with probability proportional to the number of samples they are best on, so a candidate that
alone fixes a hard case keeps a chance to be refined even when its mean is not the highest.

Parents come from that front and from the *eval front*: members no other dominates on (each eval's mean, prompt
length), so a candidate that trades one eval for another stays available. The *incumbent* (the result) changes only
when a member beats it on the paired per-sample differences of the (weighted) reward by more than `z` standard
errors (`improves`) and regresses on no guardrail eval (`regressions`). The default z = 0 (any gain) measured best
on the simulator's worlds (benchmarks/bench_optimizer.py: mean held-out 0.864 at z = 0, 0.849 at z = 1, lower at
1.645): a real fix of a rare case moves one or two validation samples, and a stricter z blocks it; raise z for a
noisy task.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from selfimprove.core.records import Policy

ACCEPT_Z = 0.0
GUARD_Z = 1.0  # a guardrail eval blocks a new incumbent when it drops by more than one standard error


@dataclass
class Member:
    id: str
    policy: Policy
    scores: dict[str, float]  # sample_id -> aggregate value in [0, 1]
    round: int = 0
    parent: str | None = None
    children: int = field(default=0)
    by_eval: dict[str, dict[str, float]] = field(default_factory=dict)  # eval -> sample_id -> normalised score
    chars: int = 0  # the system prompt's length: the cost objective of the eval front

    def eval_means(self) -> dict[str, float]:
        return {name: sum(v.values()) / len(v) if v else 0.0 for name, v in self.by_eval.items()}

    @property
    def mean(self) -> float:
        return sum(self.scores.values()) / len(self.scores) if self.scores else 0.0


def _dominates(a: Member, b: Member, ids: Sequence[str]) -> bool:
    ge = all(a.scores.get(i, 0.0) >= b.scores.get(i, 0.0) for i in ids)
    gt = any(a.scores.get(i, 0.0) > b.scores.get(i, 0.0) for i in ids)
    return ge and gt


class Population:
    """Scored candidates, at most `capacity` of them (off-front members and low means are dropped first; the seed
    is always kept)."""

    def __init__(self, sample_ids: Sequence[str], capacity: int = 4):
        self.sample_ids = list(sample_ids)
        self.capacity = max(1, capacity)
        self.members: list[Member] = []

    def add(self, member: Member) -> None:
        if any(m.id == member.id for m in self.members):
            return
        self.members.append(member)
        if len(self.members) > self.capacity and len(self.members) > 1:
            on_front = {m.id for m in self.front()}
            # drop off-front members first (they are best nowhere, or dominated), the lowest mean first
            self.members.remove(min(self.members[1:], key=lambda m: (m.id in on_front, m.mean, -m.round)))

    def paired(self, a: Member, b: Member, eval_name: str | None = None) -> tuple[float, float]:
        """(mean, standard error) of the per-sample differences a - b on the validation samples (of the aggregate
        reward, or of one eval's normalised score)."""
        sa, sb = (a.scores, b.scores) if eval_name is None else (a.by_eval.get(eval_name, {}),
                                                                  b.by_eval.get(eval_name, {}))
        d = [sa.get(i, 0.0) - sb.get(i, 0.0) for i in self.sample_ids]
        if not d:
            return 0.0, 0.0
        mean = sum(d) / len(d)
        var = sum((x - mean) ** 2 for x in d) / (len(d) - 1) if len(d) > 1 else 0.0
        return mean, math.sqrt(var / len(d))

    def improves(self, a: Member, b: Member, z: float = ACCEPT_Z) -> bool:
        """Whether `a` beats `b` by more than `z` standard errors of the paired difference (and by something; a
        single-sample gain is exactly one standard error)."""
        mean, se = self.paired(a, b)
        return mean > 0 and mean > z * se

    def regressions(self, a: Member, b: Member, guardrails: Sequence[str], z: float = GUARD_Z) -> list[str]:
        """The guardrail evals on which `a` is worse than `b` by more than `z` standard errors of the paired
        difference, each as 'name -0.125 (se 0.06)'."""
        out = []
        for name in guardrails:
            mean, se = self.paired(a, b, name)
            if mean < 0 and -mean > z * se:
                out.append(f"{name} {mean:+.3f} (se {se:.3f})")
        return out

    def not_worse(self, a: Member, b: Member, z: float = ACCEPT_Z) -> bool:
        mean, se = self.paired(a, b)
        return mean >= -z * se

    def best(self) -> Member:
        """Highest mean; ties go to the shorter prompt, then the earlier member."""
        order = {m.id: i for i, m in enumerate(self.members)}
        return max(self.members, key=lambda m: (round(m.mean, 9), -len(m.policy.system_prompt), -order[m.id]))

    def wins(self) -> dict[str, int]:
        """For each member, on how many validation samples it is among the best."""
        counts = {m.id: 0 for m in self.members}
        for sid in self.sample_ids:
            top = max(m.scores.get(sid, 0.0) for m in self.members)
            for m in self.members:
                if m.scores.get(sid, 0.0) >= top:
                    counts[m.id] += 1
        return counts

    def front(self) -> list[Member]:
        """Non-dominated members that are best on at least one sample."""
        wins = self.wins()
        on = [m for m in self.members if wins[m.id] > 0]
        return [m for m in on if not any(_dominates(o, m, self.sample_ids) for o in on if o is not m)]

    def eval_front(self) -> list[Member]:
        """Members no other member dominates on the objectives (each eval's validation mean, and prompt length as
        the cost): the trade-offs between evals a parent may be drawn from."""
        def objectives(m: Member) -> tuple[float, ...]:
            return (*(v for _, v in sorted(m.eval_means().items())), -float(m.chars))

        obj = {m.id: objectives(m) for m in self.members}
        def dominated(m: Member) -> bool:
            return any(all(x >= y for x, y in zip(obj[o.id], obj[m.id], strict=True)) and obj[o.id] != obj[m.id]
                       for o in self.members if o is not m)
        return [m for m in self.members if not dominated(m)]

    def select_parent(self, rng: random.Random) -> Member:
        """A parent from the per-sample front and the eval front, in proportion to the samples it is best on."""
        ids = {m.id for m in self.front()} | {m.id for m in self.eval_front() if m.by_eval}
        front = [m for m in self.members if m.id in ids] or [self.best()]
        wins = self.wins()
        weights = [max(wins[m.id], 1) for m in front]
        return rng.choices(front, weights=weights, k=1)[0]
