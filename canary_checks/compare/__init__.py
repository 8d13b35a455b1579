"""Canary-versus-stable statistical comparisons: read counts and buckets, keep the sequential evidence, decide.

Each comparison ends in a :class:`~canary_checks.gates.GateResult` like any gate (so the plugin, the JUnit
properties, the summary table and the runner treat it the same), named ``compare_<key>`` after its key under
``statistics:`` in the config.

* ``errors`` — the anytime-valid error-ratio test (:class:`canary_checks.stats.SequentialTest`) fed with the error
  and request counts of each interval since the previous check.
* ``latency_p50/p95/p99`` — the same test on the share of requests slower than stable's quantile (a bucket bound
  fixed from stable's data *before* the evidence starts), plus time-uniform bounds on both quantiles and their
  difference from the histogram buckets accumulated since the evidence started.
* ``cpu`` (CPU seconds per request, so that a canary with 5 % of the traffic is not compared by raw CPU with a
  stable carrying 95 %) and ``memory`` (working set per pod) — the Kayenta-style Mann–Whitney classifier over the
  window's samples: a fixed-horizon test, marked as such.

The evidence (:class:`Evidence`) lives in a JSON file — the run's state — so checking at every poll and every stage
keeps accumulating the same test instead of starting a new one. The stage's comparisons share the false-alarm rate
through Holm (or Benjamini–Hochberg), stated in each result.

The package, along its seams: :mod:`~canary_checks.compare.registry` the comparisons and their names;
:mod:`~canary_checks.compare.evidence` the evidence file, its lock and its loading; :mod:`~canary_checks.compare.reads`
the reads from Prometheus; :mod:`~canary_checks.compare.results` the sequential comparisons' results;
:mod:`~canary_checks.compare.resources` the resource comparisons; :mod:`~canary_checks.compare.evaluate` the order of
things and the stage's correction.
"""

import importlib
from typing import TYPE_CHECKING, Any

from canary_checks.compare.registry import COMPARISONS, Comparison, comparisons_in_family, comparisons_of

if TYPE_CHECKING:
    from canary_checks.compare.evaluate import evaluate_comparisons
    from canary_checks.compare.evidence import Evidence, evidence_path

_ELSEWHERE = {"evaluate_comparisons": "evaluate", "Evidence": "evidence", "evidence_path": "evidence"}
"""What needs the statistics (NumPy, SciPy: ~1.5 s to import), loaded when first used: the registry alone names the
comparisons, as collecting a suite (``compare_params``) and a dry run need."""


def __getattr__(name: str) -> Any:
    if name not in _ELSEWHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"canary_checks.compare.{_ELSEWHERE[name]}"), name)


__all__ = [
    "COMPARISONS",
    "Comparison",
    "Evidence",
    "comparisons_in_family",
    "comparisons_of",
    "evaluate_comparisons",
    "evidence_path",
]
