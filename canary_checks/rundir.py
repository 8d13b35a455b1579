"""A run's directory, ``reports/<run-id>/``, and its one writer: :class:`RunRecord`.

Every gate session (the pytest plugin, ``canary-checks gates``), smoke session, webhook call (``serve``), rollout
(the runner) and demo tour owns one. They all write it through a :class:`RunRecord`, in the same words:

- :meth:`RunRecord.start` — the directory and ``run.json`` (what ran: kind, service, namespace, stage, start);
- :meth:`RunRecord.event` — a line of ``events.jsonl`` (a rollout's decisions, the tour's weights and faults);
- :meth:`RunRecord.junit` — where a suite run's JUnit goes, by the one naming rule :func:`parse_junit` reads back:
  ``stage-25.xml``, then ``stage-25-retry1.xml`` for the second attempt;
- :meth:`RunRecord.finish` — the end in ``run.json``, the metric series, ``summary.json`` and ``report.html``
  (made by :mod:`canary_checks.report` from the files alone). It never raises: a report that cannot be written is
  said, and never changes the run's outcome.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from canary_checks.errors import CanaryError, redact_url

if TYPE_CHECKING:
    from canary_checks.config import CanaryConfig
    from canary_checks.prometheus import MetricsSource

__all__ = ["GATE_RUN_SPAN", "Finished", "RunRecord", "new_run_id", "parse_junit", "write_run"]

RUN, SUMMARY, HTML, SERIES, EVENTS = "run.json", "summary.json", "report.html", "series.json", "events.jsonl"
GATE_RUN_SPAN = 900.0
"""Seconds of history a single gate run's plots show (before its end)."""
_JUNIT_NAME = re.compile(r"^stage-(\d+)(?:-retry(\d+))?$")


def new_run_id(kind: str) -> str:
    """``gate-20261127-113000-1a2b3c``; a rollout's id has no prefix (the runner's record names it)."""
    stamp = time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    return stamp if kind == "rollout" else f"{kind}-{stamp}"


def write_run(run_dir: Path, **meta: Any) -> dict[str, Any]:
    """Merge ``meta`` into the run's ``run.json`` (created with the directory); a URL's password is stored as ***."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    data.update({k: redact_url(v) if isinstance(v, str) else v for k, v in meta.items() if v is not None})
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data


def junit_name(stage: int | str, attempt: int = 1) -> str:
    """The JUnit file of a suite run: ``stage-25.xml`` for a stage, ``<name>.xml`` for a named run (``fault-2``);
    ``stage-25-retry1.xml`` for attempt 2, ..."""
    base = f"stage-{stage}" if isinstance(stage, int) else stage
    return f"{base}.xml" if attempt <= 1 else f"{base}-retry{attempt - 1}.xml"


def parse_junit(stem: str) -> tuple[int, int] | None:
    """(stage, attempt) of a JUnit file named by :func:`junit_name` (without ``.xml``); None for any other name."""
    match = _JUNIT_NAME.match(stem)
    return (int(match.group(1)), int(match.group(2) or 0) + 1) if match else None


@dataclass(frozen=True)
class Finished:
    """What :meth:`RunRecord.finish` wrote: the report, or why there is none."""

    html: Path | None = None
    problem: str = ""
    """``the report could not be written: ...`` (empty when it was)."""
    series_errors: tuple[str, ...] = ()
    """Why the series could not be read (the report was written without plots)."""


def _problem(e: Exception) -> str:
    what = e.message if isinstance(e, CanaryError) else f"{e.__class__.__name__}: {e}"
    return f"the report could not be written: {what}"


@dataclass
class RunRecord:
    """The writer of one run's directory; ``dry_run`` writes nothing (the runner's --dry-run)."""

    path: Path
    dry_run: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def start(cls, reports: Path, kind: str, *, run_id: str | None = None, **meta: Any) -> RunRecord:
        """A new run of ``kind`` under ``reports``: its directory and ``run.json`` with ``meta`` (None values left
        out). Raises OSError where the directory cannot be written."""
        run = cls(reports / (run_id or new_run_id(kind)))
        run.meta(kind=kind, **meta)
        return run

    @property
    def run_id(self) -> str:
        return self.path.name

    def meta(self, **meta: Any) -> dict[str, Any]:
        """Merge ``meta`` into ``run.json``."""
        if self.dry_run:
            return {}
        return write_run(self.path, **meta)

    def event(self, name: str, **details: Any) -> dict[str, Any]:
        """Append an event (now, ``name``, ``details``) to ``events.jsonl``; returns it."""
        entry = {"time": time.time(), "event": str(name), **details}
        self.append(entry)
        return entry

    def append(self, entry: Mapping[str, Any]) -> None:
        """Append an event as given (it has its ``time`` and ``event``) to ``events.jsonl``."""
        if self.dry_run:
            return
        with self._lock:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(self.path / EVENTS, "a") as f:
                f.write(json.dumps(entry, sort_keys=True) + "\n")

    def has_events(self) -> bool:
        return (self.path / EVENTS).exists()

    def junit(self, stage: int | None, attempt: int = 1, *, name: str = "gate") -> Path:
        """Where a suite run's JUnit goes: :func:`junit_name` of the stage, else of ``name`` (``smoke-canary``,
        ``fault-2``)."""
        return self.path / junit_name(stage if stage is not None else name, attempt)

    def copy_junit(self, source: Path, stage: int | None, *, name: str = "gate") -> None:
        """A JUnit file written elsewhere (pytest's own ``--junitxml``), copied in under the naming rule."""
        if source.exists():
            shutil.copyfile(source, self.junit(stage, name=name))

    def series(self, config: CanaryConfig, source: MetricsSource, start: float, end: float) -> dict[str, Any]:
        """``series.json``: the error rate and latency of canary and stable from ``start`` to ``end``."""
        from canary_checks.report import record_series  # report reads run directories: it imports this module

        return record_series(config, source, self.path, start, end)

    def build(self) -> Path:
        """``summary.json`` and ``report.html`` from the directory's files."""
        from canary_checks.report import build_report

        return build_report(self.path)

    def finish(
        self,
        config: CanaryConfig | None = None,
        source: MetricsSource | None = None,
        *,
        since: float | None = None,
        end: float | None = None,
        **meta: Any,
    ) -> Finished:
        """The run's end: ``meta`` into ``run.json``, the series from ``since`` (None: :data:`GATE_RUN_SPAN`
        before ``end``) read from ``source`` (None: the config's Prometheus) when there is a ``config``, then the
        report. Never raises: what went wrong is returned."""
        if self.dry_run:
            return Finished()
        end = time.time() if end is None else end
        errors: tuple[str, ...] = ()
        try:
            if meta:
                self.meta(**meta)
            if config is not None:
                if source is None:
                    from canary_checks.prometheus import MetricsSource

                    source = MetricsSource(config)
                start = end - GATE_RUN_SPAN if since is None else since
                errors = tuple(self.series(config, source, start, end)["errors"])
            return Finished(self.build(), "", errors)
        except Exception as e:  # the report must never change the run's outcome; say what went wrong instead
            return Finished(None, _problem(e), errors)
