"""Canary-versus-stable statistics: pure functions over numbers and numpy arrays, no I/O.

* :mod:`~canary_checks.stats.counts` — errors against requests: Fisher / exact rate-ratio test for one window, and an
  anytime-valid mixture test with a confidence sequence for the error-rate ratio, valid at every look, tempered for
  bursts, exact at any count (the model; its parts are :mod:`~canary_checks.stats.fixed`, ``margin``, ``likelihood``,
  ``tempering``, ``sequential`` and ``power``);
* :mod:`~canary_checks.stats.histogram` — latency from histogram buckets: Mann–Whitney on bucket ranks,
  time-uniform CDF bands and the quantile bounds they give;
* :mod:`~canary_checks.stats.kayenta` — a Kayenta-compatible judge (Mann–Whitney + Hodges–Lehmann, scoring);
* :mod:`~canary_checks.stats.multiple` — family-wise error or false discovery rate across a stage's comparisons.

Every function ends in an :class:`Outcome` (or a Kayenta classification); bad data (NaN, negative counts, an empty
side) gives ``no data`` with a reason, never an exception and never a pass. Bad parameters (an alpha outside (0, 1), a
margin that is not a positive ratio) raise ``ValueError`` saying what is allowed.
"""

from canary_checks.stats.counts import (
    Counts,
    ErrorEvidence,
    FixedTest,
    SequentialTest,
    detectable_rate,
    fixed_test,
    requests_to_decide,
)
from canary_checks.stats.histogram import (
    Histogram,
    MannWhitney,
    QuantileComparison,
    cdf_band,
    compare_quantile,
    interpolated_quantile,
    mann_whitney,
    quantile_bounds,
)
from canary_checks.stats.multiple import Correction, adjust
from canary_checks.stats.outcome import Outcome

__all__ = [
    "Correction",
    "Counts",
    "ErrorEvidence",
    "FixedTest",
    "Histogram",
    "MannWhitney",
    "Outcome",
    "QuantileComparison",
    "SequentialTest",
    "adjust",
    "cdf_band",
    "compare_quantile",
    "detectable_rate",
    "fixed_test",
    "interpolated_quantile",
    "mann_whitney",
    "quantile_bounds",
    "requests_to_decide",
]
