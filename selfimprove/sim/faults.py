"""The simulator's knobs, its fault injection (latency, 429s, 500s, dropped connections, slow responses) and its
request counters. Fault decisions come from one seeded RNG, so a run with the same request order is repeatable."""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class SimConfig:
    seed: int = 0
    latency_ms: float = 0.0
    jitter_ms: float = 0.0
    error_rate: float = 0.0          # fraction of requests answered 500
    throttle_rate: float = 0.0       # fraction answered 429 with Retry-After
    rate_limit: float | None = None  # requests per second; above it, 429 with Retry-After
    retry_after_s: float = 1.0       # Retry-After for throttle_rate 429s
    drop_rate: float = 0.0           # fraction of connections closed without a response
    slow_rate: float = 0.0           # fraction of responses delayed by slow_ms (to exceed a client timeout)
    slow_ms: float = 5000.0
    fault_models: list[str] | None = None  # faults only for these models (None: all)
    judge_error_rate: float = 0.0
    judge_truncate_rate: float = 0.0  # fraction of sim-judge answers cut off mid-answer (finish_reason "length"), as a
    #                                   small model's that never closes its explanation
    task_degradation: float = 0.0    # fraction of task-model replies that ignore the system prompt (a regression)
    judge_rejects_response_format: bool = False
    optimizer_vague: float = 0.0
    optimizer_drop: float = 0.0
    optimizer_filler: float = 0.0
    gullible: bool | str = False   # True: copies planted instructions; "paraphrase": rewords them first
    batch_delay_s: float = 0.2       # a batch is completed this long after it was created (read at each retrieve)
    batch_error_rate: float = 0.0    # fraction of batch lines answered 500 in the batch's error file
    batch_expire_rate: float = 0.0   # > 0: a batch ends `expired`, this fraction of its lines unrun (batch_expired)
    batch_fail: str = ""             # an error code every new batch fails validation with (e.g. token_limit_exceeded)
    extra: dict[str, Any] = field(default_factory=dict)

    def update(self, **knobs: Any) -> None:
        names = {f.name for f in fields(self)} - {"extra"}
        unknown = sorted(set(knobs) - names)
        if unknown:
            raise ValueError(f"unknown simulator knob(s): {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        for k, v in knobs.items():
            setattr(self, k, v)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("extra")
        return d


@dataclass(frozen=True)
class Fault:
    kind: str  # "ok", "throttle", "error", "drop"
    delay_s: float = 0.0
    retry_after_s: float = 0.0


class FaultInjector:
    def __init__(self, config: SimConfig):
        self.config = config
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._tokens = None  # the bucket starts full, at the first rate-limited request
        self._stamp = time.monotonic()

    def reseed(self) -> None:
        with self._lock:
            self._rng = random.Random(self.config.seed)

    def decide(self, model: str | None) -> Fault:
        c = self.config
        with self._lock:
            rate = c.rate_limit
            if rate:
                now = time.monotonic()
                burst = max(1.0, rate)
                level = burst if self._tokens is None else self._tokens + (now - self._stamp) * rate
                self._tokens = min(burst, level)
                self._stamp = now
                if self._tokens < 1.0:
                    return Fault("throttle", retry_after_s=(1.0 - self._tokens) / rate)
                self._tokens -= 1.0
            if c.fault_models is not None and model not in c.fault_models:
                r = [1.0] * 4
            else:
                r = [self._rng.random() for _ in range(4)]
            jitter = (self._rng.random() * 2 - 1) * c.jitter_ms if c.jitter_ms else 0.0
        if r[0] < c.drop_rate:
            return Fault("drop")
        if r[1] < c.error_rate:
            return Fault("error")
        if r[2] < c.throttle_rate:
            return Fault("throttle", retry_after_s=c.retry_after_s)
        delay = max(0.0, c.latency_ms + jitter) / 1000.0
        if r[3] < c.slow_rate:
            delay += c.slow_ms / 1000.0
        return Fault("ok", delay_s=delay)


class Stats:
    """Request counters by model, status and endpoint, and token totals by model."""

    def __init__(self):
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.requests = 0
            self.by_status: dict[str, int] = defaultdict(int)
            self.by_endpoint: dict[str, int] = defaultdict(int)
            self.by_model: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
            self.tokens: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def record(self, endpoint: str, model: str | None, status: int | str, usage: dict | None = None) -> None:
        with self._lock:
            self.requests += 1
            self.by_status[str(status)] += 1
            self.by_endpoint[endpoint] += 1
            if model is not None:
                self.by_model[model][str(status)] += 1
                if usage:
                    self.tokens[model]["prompt"] += usage.get("prompt_tokens", 0)
                    self.tokens[model]["completion"] += usage.get("completion_tokens", 0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": self.requests,
                "by_status": dict(self.by_status),
                "by_endpoint": dict(self.by_endpoint),
                "by_model": {m: dict(s) for m, s in self.by_model.items()},
                "tokens": {m: dict(t) for m, t in self.tokens.items()},
            }
