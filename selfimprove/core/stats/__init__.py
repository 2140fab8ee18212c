"""Pure statistics for deciding whether a candidate policy beats the baseline (no I/O, no clock).

- `paired`: `paired_bootstrap` (CI of the mean paired difference), `sign_test`, `summarize_eval`.
- `sprt`: `SPRT` / `sprt_run`, a sequential test that stops early (H0: gain <= 0 vs H1: gain >= delta),
  and `fixed_sample_size`, the fixed-n test it is compared with.
- `selection`: `pareto_front` over (evals, cost) and `classify_samples` (trivial / discriminative /
  challenging).

Scores are floats in [0, 1]; paired inputs are aligned by position (the same sample under both policies).
numpy and scipy are imported inside functions, so importing this package is cheap.
"""

from selfimprove.core.stats.paired import (
    EvalComparison,
    Interval,
    SignTest,
    complete_pairs,
    paired_bootstrap,
    paired_differences,
    sign_test,
    summarize_eval,
)
from selfimprove.core.stats.selection import classify_samples, pareto_front
from selfimprove.core.stats.sprt import SPRT, Decision, SPRTResult, fixed_sample_size, sprt_run, wald_bounds

__all__ = [
    "SPRT",
    "Decision",
    "EvalComparison",
    "Interval",
    "SPRTResult",
    "SignTest",
    "classify_samples",
    "complete_pairs",
    "fixed_sample_size",
    "paired_bootstrap",
    "paired_differences",
    "pareto_front",
    "sign_test",
    "sprt_run",
    "summarize_eval",
    "wald_bounds",
]
