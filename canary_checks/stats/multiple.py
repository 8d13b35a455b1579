"""Many statistical gates at once: keep the false-alarm rate of a stage's comparisons at alpha.

* ``fwer`` — Holm's step-down procedure: the chance that *any* comparison of the stage fails a healthy canary stays
  at or under alpha, whatever the dependence between them (they share traffic, so they are dependent).
* ``fdr`` — Benjamini–Hochberg (``scipy.stats.false_discovery_control``): the expected share of false alarms among
  the failing comparisons stays at or under alpha, for independent or positively dependent comparisons.
* ``none`` — each comparison at alpha on its own.

Anytime-valid p-values (1 / the largest e-value so far) are valid p-values at every look, so they enter these
procedures like fixed-sample ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

__all__ = ["Correction", "adjust", "describe"]

Correction = Literal["fwer", "fdr", "none"]


def adjust(p_values: Sequence[float], method: Correction = "fwer") -> list[float]:
    """Adjusted p-values in the input order: compare each with alpha. NaN (no test) stays NaN and does not count."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(p.shape, math.nan)
    ok = ~np.isnan(p)
    if not ok.any():
        return [math.nan] * len(p)
    q = np.clip(p[ok], 0.0, 1.0)
    if method == "none":
        adj = q
    elif method == "fdr":
        from scipy import stats as sps  # scipy.stats takes a second to import: only for this correction

        adj = sps.false_discovery_control(q, method="bh")
    elif method == "fwer":
        m = len(q)
        order = np.argsort(q)
        stepped = np.maximum.accumulate((m - np.arange(m)) * q[order])
        adj = np.empty(m)
        adj[order] = np.minimum(stepped, 1.0)
    else:
        raise ValueError(f"correction must be fwer, fdr or none; got {method!r}")
    out[ok] = adj
    return [float(x) for x in out]


def describe(method: Correction, alpha: float, count: int) -> str:
    """One line for reports: what the stage's comparisons guarantee together."""
    what = f"{count} comparison{'s' if count != 1 else ''}"
    if method == "fwer":
        return f"family-wise error rate ≤ {alpha:g} across {what} (Holm)"
    if method == "fdr":
        return f"false discovery rate ≤ {alpha:g} across {what} (Benjamini–Hochberg)"
    return f"each of {what} at {alpha:g} on its own (no multiplicity correction)"
