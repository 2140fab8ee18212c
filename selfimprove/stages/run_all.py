"""`selfimprove run --all` (or `--targets GLOB`): the loop for many call sites in one process, for one cron job.

Contract:
- Every target runs `run_loop` under its own lock (a target another process is running fails alone, with
  LockHeld); up to `parallel` targets at a time, in threads.
- The provider's concurrency is shared: every LLM client of the process takes its slots from one limiter per
  endpoint (llm/throttle.py), so targets on the same provider share its rate limit; `provider_concurrency` caps
  that limiter (at most that many calls in flight per endpoint across all targets).
- One target's failure (a bad config, a server down, an integrity error, a bug) is that target's outcome
  "error", with its message, hint and exit code; the others still run.
- One summary: each target's outcome, and an exit code for the whole — the first failed target's code (1, 2
  or 4) when any failed, else the first non-zero outcome's (`outcome_code`: 3 refused, 5 regressed), else 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from selfimprove.core.errors import SelfimproveError, UsageError
from selfimprove.stages.loop import LoopResult, run_loop


class TargetRun(BaseModel):
    """One target's part of a `run --all`."""

    target: str
    config: str
    outcome: str = Field(description="the loop's outcome, or 'error'")
    exit_code: int
    error: str | None = None
    hint: str | None = None
    result: LoopResult | None = None
    seconds: float = 0.0


class RunAllResult(BaseModel):
    targets: list[TargetRun]
    parallel: int
    provider_concurrency: int | None = None
    exit_code: int = Field(description="the first failed target's exit code, else the first non-zero outcome's "
                                       "(3 refused or rolled back, 5 regressed), else 0")
    seconds: float = 0.0


def find_configs(root: str | Path, pattern: str | None = None) -> list[Path]:
    """The target configs to run: those matching `pattern` (a glob, relative to `root` unless absolute), or every
    `configs/*.toml|json`; never the `base*` files others extend. A pattern matching nothing is a UsageError."""
    root = Path(root)
    if pattern:
        base = Path(pattern)
        found = sorted(Path(base.anchor).glob(str(base.relative_to(base.anchor)))) if base.is_absolute() else \
            sorted(root.glob(pattern))
        found = [p for p in found if p.suffix in (".toml", ".json") and p.is_file() and not p.stem.startswith("base")]
        if not found:
            raise UsageError(f"no target config matches {pattern!r} under {root}",
                             hint="e.g. --targets 'configs/support-*.toml'")
        return found
    from selfimprove.config.load import target_configs

    found = target_configs(root)
    if not found:
        raise UsageError("no target config found in configs/", hint="create one with `selfimprove init NAME`")
    return found


def outcome_code(result: LoopResult) -> int:
    """The exit code `selfimprove run` gives a loop's outcome: 5 production regressed online (and no promotion
    replaced it), 3 the gate refused or a rollout's challenger was rolled back, else 0."""
    if result.regressed and result.outcome != "promoted" or result.outcome == "regressed":
        return 5
    return 3 if result.outcome in ("refused", "rolled back") else 0


def run_all(configs: list[Path], *, root: str | Path = ".", parallel: int = 2,
            provider_concurrency: int | None = None, log: Callable[[str], None] | None = None,
            **loop: Any) -> RunAllResult:
    """Run the loop for every config; see the module docstring. `loop` holds `run_loop`'s other arguments
    (overrides, since, trials, dry_run, ...), the same for every target; `log` gets each target's log lines
    prefixed with its name."""
    from selfimprove.llm.throttle import cap_concurrency

    if parallel < 1:
        raise UsageError(f"--parallel must be at least 1, got {parallel}")
    started = time.monotonic()
    if provider_concurrency is not None:
        cap_concurrency(provider_concurrency)

    def one(config: Path) -> TargetRun:
        t0 = time.monotonic()
        name = config.stem
        try:
            said = (lambda line: log(f"{name}: {line}")) if log is not None else None
            result = run_loop(root=root, target=str(config), log=said, **loop)
        except SelfimproveError as exc:
            return TargetRun(target=name, config=str(config), outcome="error", exit_code=exc.exit_code,
                             error=exc.message, hint=exc.hint, seconds=round(time.monotonic() - t0, 2))
        except Exception as exc:  # noqa: BLE001 - a bug in one target must not stop the others (exit 1)
            return TargetRun(target=name, config=str(config), outcome="error", exit_code=1,
                             error=f"unexpected error: {type(exc).__name__}: {exc}",
                             hint="re-run this target alone with SELFIMPROVE_DEBUG=1 for the traceback",
                             seconds=round(time.monotonic() - t0, 2))
        return TargetRun(target=result.target, config=str(config), outcome=result.outcome, exit_code=outcome_code(result),
                         result=result, seconds=round(time.monotonic() - t0, 2))

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="run-target") as pool:
        runs = list(pool.map(one, configs))
    failed = [r.exit_code for r in runs if r.outcome == "error"]
    code = failed[0] if failed else next((r.exit_code for r in runs if r.exit_code), 0)
    return RunAllResult(targets=runs, parallel=parallel, provider_concurrency=provider_concurrency, exit_code=code,
                        seconds=round(time.monotonic() - started, 2))
