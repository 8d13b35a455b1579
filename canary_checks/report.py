"""What a run recorded, and the report made from it.

Every gate run (``pytest suites/gate``), smoke run and rollout owns a directory ``reports/<run-id>/``, written
through :class:`canary_checks.rundir.RunRecord`:

- ``run.json`` — what ran: kind (gate, smoke, rollout, webhook), service, namespace, image, stage, start and end;
- ``*.xml`` — pytest's JUnit per suite run (``stage-25.xml``, ``stage-25-retry1.xml``), one test case per gate
  with its properties;
- ``events.jsonl`` — a rollout's decisions, in order (weights, holds, rollback, promotion);
- ``series.json`` — error rate and latency quantiles of canary and stable over the run, read from Prometheus
  when the run ended;
- ``evidence.json`` — the sequential comparisons' evidence, where there is one.

From those files alone :func:`build_report` writes ``summary.json`` (for machines) and ``report.html`` (one
self-contained page: the decision and why, every gate per stage, plots embedded as PNG). ``canary-checks report
RUN_ID`` runs it again.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canary_checks.errors import CanaryError
from canary_checks.record import Event
from canary_checks.rundir import EVENTS, HTML, RUN, SERIES, SUMMARY, parse_junit

if TYPE_CHECKING:
    from canary_checks.config import CanaryConfig
    from canary_checks.prometheus import MetricsSource

__all__ = [
    "GateRecord",
    "build_report",
    "find_run",
    "list_runs",
    "outcome_of",
    "prune_runs",
    "read_junit",
    "record_series",
    "summarize",
]

SERIES_POINTS = 240
"""Points per plotted series at most (the range query's step grows with the run)."""


@dataclass(frozen=True)
class GateRecord:
    """One gate test case as the JUnit file has it."""

    test: str
    outcome: str
    """passed, failed, error or skipped (pytest's outcome)."""
    gate: str = ""
    verdict: str = ""
    value: str = ""
    threshold: str = ""
    unit: str = ""
    severity: str = ""
    summary: str = ""
    message: str = ""
    queries: tuple[str, ...] = field(default_factory=tuple)
    properties: dict[str, str] = field(default_factory=dict)
    """Every other property recorded (a comparison's p_value and interval, a smoke check's status and served_by)."""


def read_junit(path: Path) -> list[GateRecord]:
    """Every test case of a pytest JUnit file, with the gate properties the plugin records."""
    root = ET.parse(path).getroot()
    records = []
    for case in root.iter("testcase"):
        props: dict[str, str] = {}
        queries = []
        for prop in case.iter("property"):
            name, value = prop.get("name", ""), prop.get("value", "")
            if name == "query":
                queries.append(value)
            else:
                props[name] = value
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            element = case.find(tag)
            if element is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = element.get("message", "") or (element.text or "")
                break
        records.append(
            GateRecord(
                test=f"{case.get('classname', '')}::{case.get('name', '')}",
                outcome=outcome,
                gate=props.get("gate", ""),
                verdict=props.get("verdict", "error" if outcome == "error" else ""),
                value=props.get("value", ""),
                threshold=props.get("threshold", ""),
                unit=props.get("unit", ""),
                severity=props.get("severity", ""),
                summary=props.get("summary", props.get("error", "")),
                message=message,
                queries=tuple(queries),
                properties=props,
            )
        )
    return records


# ---- the run directory -------------------------------------------------------------------------------------------


def list_runs(reports: Path) -> list[dict[str, Any]]:
    """Every run under ``reports`` with a ``run.json``, newest first (none read through a link leading out)."""
    runs = []
    root = reports.resolve()
    for path in reports.glob(f"*/{RUN}"):
        if not path.resolve().is_relative_to(root):
            continue
        try:
            meta = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        summary_path = path.parent / SUMMARY
        decision = ""
        if summary_path.exists():
            try:
                decision = json.loads(summary_path.read_text())["decision"]["outcome"]
            except (OSError, ValueError, KeyError, TypeError):
                decision = ""
        runs.append({"run_id": path.parent.name, "decision": decision, **meta})
    return sorted(runs, key=lambda r: float(r.get("started") or 0), reverse=True)


_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
"""A run id, or a prefix of one: one directory name (no '/', no '..', nothing a glob would read)."""


def find_run(reports: Path, run_id: str) -> Path:
    """The directory of ``run_id`` (or of the one run whose id starts with it), inside ``reports``: the id is one
    directory name, and neither the run's directory nor a file in it may lead out of ``reports`` (the report
    command reads and writes only there)."""
    if not _RUN_ID.fullmatch(run_id):
        raise CanaryError(
            f"{run_id!r} is not a run id: a run id is the name of one directory in {reports}/ "
            "(letters, digits, '.', '_' and '-'), such as gate-20261127-113000-1a2b3c",
            where="RUN_ID",
            fix=f"run 'canary-checks report --reports {reports}' to list the runs",
        )
    exact = reports / run_id
    if (exact / RUN).exists() or any(exact.glob("*.xml")):
        return _inside(reports, exact)
    matches = [p.parent for p in reports.glob(f"{run_id}*/{RUN}")]
    if len(matches) == 1:
        return _inside(reports, matches[0])
    known = [r["run_id"] for r in list_runs(reports)[:5]]
    raise CanaryError(
        f"no run {run_id!r} in {reports}" if not matches else f"{run_id!r} matches {len(matches)} runs",
        where=str(reports),
        fix=("the latest: " + ", ".join(known))
        if known
        else "run a gate suite or a rollout first; --reports DIR points at another reports directory",
    )


def disk_usage(path: Path) -> int:
    """Bytes ``path`` and everything under it take on disk (links not followed), as ``du`` and the kubelet's
    emptyDir limit count them."""
    total = 0
    for root, dirs, files in os.walk(path):
        for name in [*dirs, *files]:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except OSError:  # deleted meanwhile
                continue
    try:
        return total + os.lstat(path).st_blocks * 512
    except OSError:
        return total


def prune_runs(reports: Path, *, kind: str, keep: int, max_bytes: int, spare: Iterable[str] = ()) -> list[str]:
    """Delete the oldest runs of ``kind`` in ``reports`` so that at most ``keep`` remain and they take at most
    ``max_bytes`` on disk: the newest that fit stay, everything older goes. The newest run and the runs named in
    ``spare`` (still being written) are never deleted, and count. Returns the deleted runs' ids, oldest last."""
    spared = set(spare)
    deleted: list[str] = []
    count = size = 0
    full = False
    for i, run in enumerate(r for r in list_runs(reports) if r.get("kind") == kind):  # newest first
        run_id = str(run["run_id"])
        used = disk_usage(reports / run_id)
        full = full or (i > 0 and run_id not in spared and (count + 1 > keep or size + used > max_bytes))
        if full and run_id not in spared:
            shutil.rmtree(reports / run_id, ignore_errors=True)
            deleted.append(run_id)
        else:
            count, size = count + 1, size + used
    return deleted


def _inside(reports: Path, run_dir: Path) -> Path:
    """``run_dir``, once neither it nor anything in it is a link that leads out of ``reports``."""
    root = reports.resolve()
    for path in [run_dir, *run_dir.rglob("*")]:
        if path == run_dir or path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(root):
                raise CanaryError(
                    f"{path.relative_to(reports)} leads out of {reports}/ (to {target}); the report command reads "
                    "and writes only inside the reports directory",
                    where=str(reports),
                    fix=f"remove the link, or copy what it points to into {run_dir}",
                )
    return run_dir


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
    """Read error rate (%) and latency p50/p95/p99 (ms) of canary and stable from ``start`` to ``end`` (range
    queries over the gates' window), and write them to ``series.json``. Prometheus failing is recorded, not raised:
    a report without plots still has its decision and gates."""
    start = min(start, end - config.window)
    step = max(1.0, math.ceil((end - start) / SERIES_POINTS))
    queries: dict[tuple[str, str], str] = {}
    for name, (kind, quantile) in SERIES_QUERIES.items():
        for side in ("canary", "stable"):
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


# ---- summary ----------------------------------------------------------------------------------------------------


def _read_events(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / EVENTS
    if not path.exists():
        return []
    events = []
    for line in path.read_text().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a crash: the rest still tells the story
    return events


def _suite_runs(run_dir: Path) -> list[dict[str, Any]]:
    runs = []
    for junit in run_dir.glob("*.xml"):
        try:
            records = read_junit(junit)
        except ET.ParseError as e:
            error = f"unreadable JUnit file: {e}"
            runs.append({"name": junit.stem, "junit": junit.name, "time": junit.stat().st_mtime, "stage": None,
                         "attempt": 1, "passed": False, "error": error, "gates": []})  # fmt: skip
            continue
        stage, attempt = parse_junit(junit.stem) or (None, 1)
        name = f"stage {stage} %" + (f", attempt {attempt}" if attempt > 1 else "") if stage is not None else junit.stem
        failing = [r for r in records if r.outcome in ("failed", "error")]
        runs.append(
            {
                "name": name,
                "junit": junit.name,
                "time": junit.stat().st_mtime,
                "stage": stage,
                "attempt": attempt,
                "passed": bool(records) and not failing,
                "error": "" if records else "no test case recorded",
                "gates": [_record_dict(r) for r in records],
            }
        )
    return sorted(runs, key=lambda r: (r["time"], r["stage"] if r["stage"] is not None else 101, r["attempt"]))


def _record_dict(r: GateRecord) -> dict[str, Any]:
    d = asdict(r)
    d["queries"] = list(r.queries)
    d["name"] = r.gate or r.properties.get("smoke", "") or r.test.rpartition("::")[2]
    return d


_TIMELINE = (Event.DEPLOYING, Event.DEPLOYED, Event.SMOKE, Event.WEIGHT, Event.STAGE_PASSED, Event.HELD,
             Event.ROLLBACK_STARTED, Event.ROLLED_BACK, Event.PROMOTING, Event.PROMOTED, Event.AWAITING_PROMOTION,
             Event.RESUMED, Event.FAULT, Event.OUTSIDE_WINDOW)  # fmt: skip
"""The events the report's timeline shows."""
_TERMINAL = (Event.ROLLED_BACK, Event.PROMOTED, Event.AWAITING_PROMOTION)
"""A rollout's events that end it, each its outcome."""


def _decision(meta: Mapping[str, Any], events: list[dict[str, Any]], runs: list[dict[str, Any]]) -> dict[str, Any]:
    if isinstance(meta.get("decision"), dict):  # the run decided itself (the demo tour)
        return {"outcome": "", "why": "", "time": meta.get("ended"), **meta["decision"]}
    for event in reversed(events):
        outcome = event.get("event", "")
        if outcome in _TERMINAL:
            why = event.get("why") or {
                "promoted": f"every stage passed; {event.get('image', meta.get('image', ''))} is stable now",
                "awaiting promotion": "every stage passed; promotion waits for a person (or --auto-promote)",
            }.get(outcome, "")
            return {"outcome": outcome, "why": why, "time": event.get("time")}
    if events:
        last = events[-1]
        stage = next((e.get("stage") for e in reversed(events) if e.get("stage") is not None), None)
        why = last.get("why") or f"last event: {last.get('event')}"
        return {"outcome": "in progress", "why": f"stopped or still running at stage {stage} %; {why}",
                "time": last.get("time")}  # fmt: skip
    if not runs:
        return {"outcome": "no gates", "why": "no suite run was recorded", "time": meta.get("ended")}
    last_run = runs[-1]
    time_ = meta.get("ended") or last_run["time"]
    if last_run["error"]:
        return {"outcome": "error", "why": last_run["error"], "time": time_}
    failing = [g for g in last_run["gates"] if g["outcome"] in ("failed", "error")]
    outcome = outcome_of(last_run["gates"])
    why = _why([g for g in failing if _failed(g)] or failing)
    why = {
        "passed": f"every check of {last_run['name']} passed",
        "error": f"the checks could not be read: {why}",
        "held": f"not enough to decide (the runner would hold): {why}",
    }.get(outcome, why)
    return {"outcome": outcome, "why": why, "time": time_}


def _failed(g: Mapping[str, Any]) -> bool:
    """A check that failed on its own merits: a gate's fail verdict, or a plain test (a smoke check) failing."""
    return bool(g["verdict"] == "fail" or (not g["gate"] and g["outcome"] == "failed"))


def outcome_of(records: Iterable[Mapping[str, Any]]) -> str:
    """One suite run's outcome as the runner acts on it: passed; failed (a check failed: roll back); error (only
    unreadable checks); held (no data or too few requests: wait)."""
    failing = [g for g in records if g["outcome"] in ("failed", "error")]
    if not failing:
        return "passed"
    if any(_failed(g) for g in failing):
        return "failed"
    if all(g["outcome"] == "error" for g in failing):
        return "error"
    return "held"


def _why(records: list[dict[str, Any]], most: int = 5) -> str:
    """Each distinct cause once, with the checks it hit: an unreachable Prometheus is one reason, not twenty."""
    causes: dict[str, list[str]] = {}
    for g in records:
        text = g["summary"] or g["message"]
        cause = _QUERY.sub("", text.splitlines()[0] if text else g["outcome"])
        causes.setdefault(cause, []).append(g["name"])
    parts = []
    for cause, names in list(causes.items())[:most]:
        shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        parts.append(f"{shown}: {cause}")
    if len(causes) > most:
        parts.append(f"and {len(causes) - most} more (see the table)")
    return "; ".join(parts)


_QUERY = re.compile(r" \(query '.*?'\)(?=:)")


def summarize(run_dir: Path) -> dict[str, Any]:
    """The machine-readable summary of a run, from its recorded files only."""
    meta: dict[str, Any] = json.loads((run_dir / RUN).read_text()) if (run_dir / RUN).exists() else {}
    events = _read_events(run_dir)
    runs = _suite_runs(run_dir)
    if not meta and not events and not runs:
        raise CanaryError(
            "nothing recorded in this run directory (no run.json, events.jsonl or JUnit file)",
            where=str(run_dir),
            fix="pass the id of a run listed by 'canary-checks report'",
        )
    latest = runs[-1]["gates"] if runs else []
    comparisons = [g for g in latest if g["gate"].startswith("compare_")]
    timeline = [
        {k: e[k] for k in ("time", "event", "stage", "weight", "why") if k in e}
        for e in events
        if e.get("event") in _TIMELINE
    ]  # fmt: skip
    series_path = run_dir / SERIES
    series_meta: dict[str, Any] = {"recorded": False, "errors": []}
    if series_path.exists():
        try:
            recorded = json.loads(series_path.read_text())
            series_meta = {"recorded": bool(recorded.get("series")), "errors": recorded.get("errors", []),
                           "start": recorded.get("start"), "end": recorded.get("end")}  # fmt: skip
        except ValueError as e:
            series_meta["errors"] = [f"series.json is unreadable: {e}"]
    return {
        "run_id": run_dir.name,
        "kind": meta.get("kind", "rollout" if events else "gate"),
        "service": meta.get("service", ""),
        "namespace": meta.get("namespace", ""),
        "image": meta.get("image", ""),
        "stage": meta.get("stage"),
        "started": meta.get("started", events[0]["time"] if events else None),
        "ended": meta.get("ended", events[-1]["time"] if events else None),
        "decision": _decision(meta, events, runs),
        "suite_runs": runs,
        "comparisons": comparisons,
        "timeline": timeline,
        "series": series_meta,
        "files": sorted(p.name for p in run_dir.iterdir() if p.is_file() and p.name not in (SUMMARY, HTML)),
    }


def build_report(run_dir: Path) -> Path:
    """Write ``summary.json`` and ``report.html`` of ``run_dir`` from what it recorded; returns the HTML's path."""
    summary = summarize(run_dir)
    (run_dir / SUMMARY).write_text(json.dumps(summary, indent=2, default=str) + "\n")
    series: dict[str, Any] = {}
    if (run_dir / SERIES).exists():
        try:
            series = json.loads((run_dir / SERIES).read_text())
        except ValueError:
            series = {}
    html = run_dir / HTML
    html.write_text(render_html(summary, series))
    return html


# ---- HTML --------------------------------------------------------------------------------------------------------

CANARY_COLOR, STABLE_COLOR = "#d62728", "#1f77b4"
"""Canary red, stable blue in every plot (and the legend says which is which)."""
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


def _plots(summary: Mapping[str, Any], series: Mapping[str, Any]) -> list[dict[str, str]]:
    """The run's plots as base64 PNGs: error rate, latency quantiles, and the comparisons' intervals."""
    import matplotlib

    matplotlib.use("Agg")
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
            for side, color in (("canary", CANARY_COLOR), ("stable", STABLE_COLOR)):
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
