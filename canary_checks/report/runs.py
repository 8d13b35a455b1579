"""The run directory: ``reports/<run-id>/`` made, written, listed, found by its id (confined to the reports
directory) and pruned; and the gate records read back from pytest's JUnit.

Seam: files only; what is made from them is :mod:`canary_checks.report.summary`."""

from __future__ import annotations

import json
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canary_checks.errors import CanaryError
from canary_checks.rundir import EVENTS, HTML, RUN, SERIES, SUMMARY

__all__ = ["EVENTS", "HTML", "RUN", "SERIES", "SUMMARY", "GateRecord", "disk_usage", "find_run", "list_runs",
           "prune_runs", "read_junit"]  # fmt: skip


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


# ---- the run directories (canary_checks.rundir.RunRecord writes them) ---------------------------------------------


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
