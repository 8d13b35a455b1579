"""``report.html``: one self-contained page, the decision, every gate per stage and the plots embedded as PNG.

Seam: renders a summary (and the series file) to HTML; matplotlib is imported only here, when a page is made."""

from __future__ import annotations

import base64
import io
import math
import time
from collections.abc import Mapping
from typing import Any

# ---- HTML --------------------------------------------------------------------------------------------------------

CANARY_COLOR, STABLE_COLOR, BASELINE_COLOR = "#d62728", "#1f77b4", "#7f7f7f"
"""Canary red, stable blue, a baseline grey in every plot (and the legend says which is which)."""
_DECISION_COLOR = {"promoted": "#2ca02c", "passed": "#2ca02c", "awaiting promotion": "#2ca02c",
                   "rolled back": "#d62728", "failed": "#d62728", "error": "#d62728"}  # fmt: skip


def _png(figure: Any) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode()


def _mark_run(ax: Any, summary: Mapping[str, Any], t0: float) -> None:
    """Stage boundaries (each weight change) and the decision, as vertical lines."""
    for event in summary["timeline"]:
        if event["event"] == "fault":  # the demo's injected faults
            x = (event["time"] - t0) / 60
            ax.axvline(x, color="#ff7f0e", linestyle="--", linewidth=1)
            ax.annotate(event.get("why", "fault"), (x, 0.85), xycoords=("data", "axes fraction"), fontsize=7,
                        xytext=(2, 0), textcoords="offset points", color="#ff7f0e", rotation=90, va="top")  # fmt: skip
        if event["event"] == "weight" and "weight" in event:
            x = (event["time"] - t0) / 60
            ax.axvline(x, color="#888888", linestyle=":", linewidth=1)
            ax.annotate(f"{event['weight']} %", (x, 1), xycoords=("data", "axes fraction"), fontsize=8,
                        xytext=(2, -10), textcoords="offset points", color="#555555")  # fmt: skip
    decision = summary["decision"]
    if decision.get("time"):
        x = (float(decision["time"]) - t0) / 60
        color = _DECISION_COLOR.get(decision["outcome"], "#ff7f0e")
        ax.axvline(x, color=color, linewidth=2)
        ax.annotate(decision["outcome"], (x, 0), xycoords=("data", "axes fraction"), fontsize=8, color=color,
                    xytext=(3, 4), textcoords="offset points", fontweight="bold")  # fmt: skip


def _ratio_interval(props: Mapping[str, str]) -> bool:
    """Whether a comparison's interval is one of the canary / stable ratio (memory's is a shift in bytes)."""
    try:
        lo, hi, ratio = (float(props[k]) for k in ("interval_low", "interval_high", "ratio"))
    except (KeyError, ValueError):
        return False
    return 0 <= lo <= ratio <= hi


def import_plotting() -> None:
    """Import matplotlib, drawing to files (Agg), now: a runner does it on a thread while its first stage waits, so
    that the report at its end waits for the drawing only (about half a second less)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot  # noqa: F401


def _plots(summary: Mapping[str, Any], series: Mapping[str, Any]) -> list[dict[str, str]]:
    """The run's plots as base64 PNGs: error rate, latency quantiles, and the comparisons' intervals."""
    import_plotting()
    from matplotlib import pyplot as plt

    out = []
    data = series.get("series") or {}
    t0 = float(series.get("start") or summary.get("started") or 0)
    panels = [
        ("error_rate", "Error rate (5xx), %", [("error_rate", "-")]),
        ("latency", "Latency, ms (p50 dotted, p95 solid, p99 dashed)",
         [("latency_p50", ":"), ("latency_p95", "-"), ("latency_p99", "--")]),
    ]  # fmt: skip
    for key, title, lines in panels:
        if not any(data.get(name) for name, _ in lines):
            continue
        fig, ax = plt.subplots(figsize=(10, 3.2))
        for name, style in lines:
            for side, color in (("canary", CANARY_COLOR), ("stable", STABLE_COLOR), ("baseline", BASELINE_COLOR)):
                points = (data.get(name) or {}).get(side) or []
                if points:
                    xs = [(t - t0) / 60 for t, _ in points]
                    label = f"{side} {name.removeprefix('latency_')}" if key == "latency" else side
                    ax.plot(xs, [v for _, v in points], style, color=color, linewidth=1.4, label=label)
        _mark_run(ax, summary, t0)
        ax.set_ylim(bottom=0)
        ax.set_title(title, loc="left", fontsize=11)
        ax.set_xlabel("minutes since " + time.strftime("%H:%M:%S", time.localtime(t0)))
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # no series recorded (Prometheus had none): no legend to draw
            ax.legend(fontsize=8, ncol=3, loc="best")
        else:
            ax.text(0.5, 0.5, "no data recorded", ha="center", va="center", transform=ax.transAxes, color="grey")
        out.append({"id": key, "title": title, "png": _png(fig)})
        plt.close(fig)
    intervals = [c for c in summary["comparisons"] if _ratio_interval(c["properties"])]
    if intervals:
        fig, ax = plt.subplots(figsize=(10, 0.5 + 0.45 * len(intervals)))
        for i, c in enumerate(intervals):
            lo, hi = (float(c["properties"][k]) for k in ("interval_low", "interval_high"))
            ratio = float(c["properties"].get("ratio") or "nan")
            color = {"pass": STABLE_COLOR, "fail": CANARY_COLOR}.get(c["verdict"], "#ff7f0e")
            ax.plot([max(lo, 1e-3), min(hi, 1e3)], [i, i], color=color, linewidth=3)
            if math.isfinite(ratio) and ratio > 0:
                ax.plot([ratio], [i], "o", color=color)
            if c["threshold"]:
                ax.plot([float(c["threshold"])], [i], "|", color="#333333", markersize=14)
        ax.axvline(1.0, color="#888888", linestyle=":")
        ax.set_xscale("log")
        ax.set_yticks(range(len(intervals)), [c["gate"] for c in intervals])
        ax.set_title("Canary / stable: estimate and confidence interval (| is the margin)", loc="left", fontsize=11)
        ax.grid(alpha=0.3, axis="x")
        out.append({"id": "comparisons", "title": "Comparisons", "png": _png(fig)})
        plt.close(fig)
    return out


def _when(value: Any) -> str:
    if value in (None, ""):
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(float(value)))


def render_html(summary: Mapping[str, Any], series: Mapping[str, Any]) -> str:
    """The self-contained report page (no external file, script or font)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("canary_checks", "templates"), autoescape=True, undefined=jinja2.StrictUndefined
    )
    env.filters["when"] = _when
    return env.get_template("report.html.j2").render(
        s=summary,
        plots=_plots(summary, series),
        decision_color=_DECISION_COLOR.get(summary["decision"]["outcome"], "#ff7f0e"),
    )
