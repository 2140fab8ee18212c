"""The rollout document: which builds share production traffic, how, and what the online evidence decided.

A rollout has two arms, the **champion** (what production served before) and the **challenger** (a build to
prove online). Each change of state (start, new shares after a batch of evidence, promotion, rollback, stop) is a
new *revision* of the document: revisions are numbered, each names the digest of the one before it (one chain
across rollouts), and none is ever rewritten (`store/rollouts.py` keeps the current one and the log of all).

Pure: the document, its digest, and how an app assigns a call to an arm (`arm_for`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from selfimprove.core.bandit import ArmTotals, arm_at, key_point
from selfimprove.core.canonical import digest

ROLLOUT_SCHEMA = "selfimprove.rollout/1"
ARMS = ("challenger", "champion")  # the order arms are laid out on [0, 1): the challenger's interval first
Mode = Literal["share", "thompson", "ucb"]
Status = Literal["active", "promoted", "rolled back", "stopped"]

# Span metadata the app side writes (OpenInference `metadata`), so pull can attribute outcomes to arms.
BUILD_KEY = "selfimprove.build"
ROLLOUT_KEY = "selfimprove.rollout"
ARM_KEY = "selfimprove.arm"
KEY_KEY = "selfimprove.key"


class ArmRef(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    build: str
    digest: str


class Rollout(BaseModel):
    """One revision of a rollout. `shares` maps "challenger"/"champion" to its share of the traffic (sum 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    target: str
    id: str = Field(description="names the rollout; also the salt of the key hash, so each rollout reshuffles keys")
    revision: int = Field(ge=1, description="1, 2, … across every rollout of the target")
    parent: str | None = Field(None, description="digest of the previous revision (None for the first)")
    champion: ArmRef
    challenger: ArmRef
    mode: Mode = "share"
    shares: dict[str, float]
    floor: float = Field(0.05, ge=0, le=0.5, description="the least share a bandit leaves either arm")
    key_field: str | None = Field(None, description="the call attribute that keys a sticky assignment")
    status: Status = "active"
    event: str = Field("start", description="what made this revision: start, shares, promote, rollback, stop")
    reason: str = ""
    arms: dict[str, ArmTotals] = Field(default_factory=dict, description="judged calls per arm at this revision")
    decision: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _valid_shares(self) -> Rollout:
        if set(self.shares) != set(ARMS):
            raise ValueError(f"shares must name exactly {ARMS}")
        if any(s < 0 for s in self.shares.values()) or abs(sum(self.shares.values()) - 1.0) > 1e-9:
            raise ValueError("shares must be non-negative and sum to 1")
        if self.champion.build == self.challenger.build:
            raise ValueError("the challenger must be another build than the champion")
        return self

    @property
    def digest(self) -> str:
        return digest(self.model_dump(mode="json"))

    @property
    def active(self) -> bool:
        return self.status == "active"

    def arm(self, name: str) -> ArmRef:
        return self.challenger if name == "challenger" else self.champion

    def layout(self) -> list[tuple[str, float]]:
        return [(a, self.shares[a]) for a in ARMS]

    def arm_for(self, key: str | None = None, draw: float | None = None) -> str:
        """The arm a call is served: by its key's hash point when a key is given (sticky), else by `draw` (a
        uniform random number in [0, 1) the caller supplies)."""
        point = key_point(self.id, key) if key is not None else (draw if draw is not None else 0.0)
        return arm_at(point, self.layout())

    def next(self, **changes: Any) -> Rollout:
        """The next revision: the changes applied, numbered one up, chained to this one."""
        data = {**self.model_dump(), **changes, "revision": self.revision + 1, "parent": self.digest}
        return Rollout.model_validate(data)
