"""Pure statistics for deciding whether a candidate policy beats the baseline (no I/O, no clock).

- `paired`: pairing (`complete_pairs`, `paired_differences`) and the `Interval` record.
- `clustered`: cluster bootstrap CI, cluster-robust SE and one-sided t tests, ICC.
- `sequential`: the decision test (SPRT on cluster-mean differences, Ville bound, one p-value), its live monitor.
- `sprt`: the empirical-likelihood LLR it uses, `SPRT` / `sprt_run` on single pairs, and `fixed_sample_size`.
- `stopping`: the effect corrected for early stopping. `multiple`: Holm and look spending. `power`: sample sizes.
- `selection`: `pareto_front` over (evals, cost) and `classify_samples` (trivial / discriminative /
  challenging).

Scores are normalised floats in [0, 1] (selfimprove.core.scores); paired inputs are aligned by position (the same sample under both policies).
numpy and scipy are imported inside functions, so importing this package is cheap.
"""

from selfimprove.core.stats.paired import Interval, complete_pairs, paired_differences
from selfimprove.core.stats.selection import classify_samples, pareto_front
from selfimprove.core.stats.sprt import SPRT, Decision, SPRTResult, fixed_sample_size, sprt_run, wald_bounds

__all__ = [
    "SPRT",
    "Decision",
    "Interval",
    "SPRTResult",
    "classify_samples",
    "complete_pairs",
    "fixed_sample_size",
    "paired_differences",
    "pareto_front",
    "sprt_run",
    "wald_bounds",
]
