"""The metric series of a run: error rate and latency quantiles of canary and stable over the run, read from
Prometheus into ``series.json`` when the run ends.

Seam: the one part of the report that queries Prometheus (through a :class:`~canary_checks.prometheus.MetricsSource`
the caller gives); the plots read only the file."""

from __future__ import annotations

import json
import math
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canary_checks.errors import CanaryError

if TYPE_CHECKING:
    from canary_checks.config import CanaryConfig
    from canary_checks.prometheus import MetricsSource

from canary_checks.rundir import SERIES

SERIES_POINTS = 240
"""Points per plotted series at most (the range query's step grows with the run)."""


# ---- metric series ----------------------------------------------------------------------------------------------

SERIES_QUERIES: dict[str, tuple[str, float]] = {
    "error_rate": ("errors", 0.0),
    "latency_p50": ("latency", 0.5),
    "latency_p95": ("latency", 0.95),
    "latency_p99": ("latency", 0.99),
}
"""What the plots show: name → (query of the profile, quantile)."""


def record_series(
    config: CanaryConfig, source: MetricsSource, run_dir: Path, start: float, end: float
) -> dict[str, Any]:
    """Read error rate (%) and latency p50/p95/p99 (ms) of canary and stable (and the baseline, when the config
    has one) from ``start`` to ``end`` (range
    queries over the gates' window), and write them to ``series.json``. Prometheus failing is recorded, not raised:
    a report without plots still has its decision and gates."""
    start = min(start, end - config.window)
    step = max(1.0, math.ceil((end - start) / SERIES_POINTS))
    queries: dict[tuple[str, str], str] = {}
    for name, (kind, quantile) in SERIES_QUERIES.items():
        for side in ("canary", "stable", "baseline") if config.baseline.enabled else ("canary", "stable"):
            if kind == "errors":
                errors, requests = (source.render(q, side=side) for q in ("errors", "requests"))
                # no 5xx series at all is a 0 % error rate when there were requests
                queries[name, side] = f"100 * (({errors}) or vector(0)) / ({requests})"
            else:
                queries[name, side] = source.render(kind, side=side, quantile=quantile)
    out: dict[str, Any] = {"start": start, "end": end, "step": step, "window": config.window, "series": {},
                           "queries": {f"{n}/{s}": q for (n, s), q in queries.items()}, "errors": []}  # fmt: skip
    seen: list[tuple[str, str]] = []
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {key: pool.submit(source.query_range, q, start, end, step) for key, q in queries.items()}
        for (name, side), future in futures.items():
            try:
                found = future.result()
            except CanaryError as e:
                # one line per kind of failure (an unreachable Prometheus fails every query the same way)
                if not any(kind == type(e).__name__ for kind, _ in seen):
                    seen.append((type(e).__name__, e.message.splitlines()[0]))
                    out["errors"].append(e.message.splitlines()[0])
                continue
            points = sorted((t, v) for s in found for t, v in zip(s.times, s.values, strict=True) if math.isfinite(v))
            out["series"].setdefault(name, {})[side] = points
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / SERIES).write_text(json.dumps(out) + "\n")
    return out
