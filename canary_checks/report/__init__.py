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

The package's seams: ``runs`` reads the directories and their files (:mod:`canary_checks.rundir` writes them),
``series`` the one read of Prometheus, ``summary`` the decision made from the files, ``page`` the HTML. Import from
here.
"""

from canary_checks.report.page import CANARY_COLOR as CANARY_COLOR
from canary_checks.report.page import STABLE_COLOR as STABLE_COLOR
from canary_checks.report.page import import_plotting as import_plotting
from canary_checks.report.page import render_html as render_html
from canary_checks.report.runs import EVENTS as EVENTS
from canary_checks.report.runs import HTML as HTML
from canary_checks.report.runs import RUN as RUN
from canary_checks.report.runs import SERIES as SERIES
from canary_checks.report.runs import SUMMARY as SUMMARY
from canary_checks.report.runs import GateRecord, find_run, list_runs, prune_runs, read_junit
from canary_checks.report.runs import disk_usage as disk_usage
from canary_checks.report.series import SERIES_POINTS as SERIES_POINTS
from canary_checks.report.series import SERIES_QUERIES as SERIES_QUERIES
from canary_checks.report.series import record_series
from canary_checks.report.summary import build_report, outcome_of, summarize
from canary_checks.rundir import GATE_RUN_SPAN as GATE_RUN_SPAN
from canary_checks.rundir import new_run_id, write_run

__all__ = [
    "GateRecord",
    "build_report",
    "find_run",
    "list_runs",
    "new_run_id",
    "outcome_of",
    "prune_runs",
    "read_junit",
    "record_series",
    "summarize",
    "write_run",
]
