"""From a run directory's files to ``summary.json`` and ``report.html``: the suite runs per stage, the decision
and why, and :func:`build_report`.

Seam: reads the files only (never Prometheus); the page itself is :mod:`canary_checks.report.page`."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from canary_checks.errors import CanaryError
from canary_checks.record import Event
from canary_checks.report.page import render_html
from canary_checks.report.runs import EVENTS, HTML, RUN, SERIES, SUMMARY, GateRecord, read_junit
from canary_checks.rundir import parse_junit

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
             Event.RESUMED, Event.FAULT, Event.OUTSIDE_WINDOW, Event.SCALED)  # fmt: skip
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
