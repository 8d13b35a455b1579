"""``canary-checks monitor SERVICE``: stable and canary (and a baseline) side by side, judged by the gates themselves.

Every sample evaluates the suite's gates (:func:`canary_checks.gates.evaluate`) twice at one instant: once for the
canary, and once for stable — the same gates on a copy of the config whose "canary" is the stable Deployment — so a
cell's colour comes from the same threshold, severity and no-data rules as the suite, never a second copy of them.
The canary's canary-versus-stable gates and sequential comparisons decide the recommendation line with the runner's
rule: a critical failure rolls back, a critical gate without enough data holds, otherwise promote.

Output: a live rich dashboard on a terminal, one plain line per sample otherwise, and with ``--export-metrics`` every
sample appended to a CSV (pandas) as it is taken. Prometheus going away shows on the dashboard; sampling goes on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from canary_checks.compare import comparisons_of, evaluate_comparisons
from canary_checks.config import CanaryConfig, Severity, Workloads, nearest_stage
from canary_checks.errors import CanaryError, PrometheusError, PrometheusQueryError, PrometheusUnreachable
from canary_checks.gates import GateResult, Verdict, evaluate, gates_of
from canary_checks.prometheus import MetricsSource

__all__ = ["ROWS", "Monitor", "Reading", "Recommendation", "Snapshot", "rows_for"]

SIDES = ("stable", "canary")


@dataclass(frozen=True)
class Row:
    label: str
    column: str
    """The CSV column (its unit in the name)."""
    gate: str | None
    """The gate whose value and verdict fill the cell; None for a plain reading."""
    unit: str

    @property
    def judged(self) -> bool:
        """Whether a gate colours this row (the traffic split's is the canary's share against the stage)."""
        return self.gate is not None or self.column == "traffic_share_pct"


ROWS: tuple[Row, ...] = (
    Row("error rate", "error_rate_pct", "error_rate", "%"),
    Row("success rate", "success_rate_pct", "success_rate", "%"),
    Row("request rate", "request_rate_rps", None, "req/s"),
    Row("latency p50", "latency_p50_ms", None, "ms"),
    Row("latency p95", "latency_p95_ms", "latency_p95", "ms"),
    Row("latency p99", "latency_p99_ms", "latency_p99", "ms"),
    Row("CPU", "cpu_pct_of_limit", "cpu", "% of limit"),
    Row("memory", "memory_pct_of_limit", "memory", "% of limit"),
    Row("pods ready", "pods_ready_pct", "pods_ready", "%"),
    Row("traffic split", "traffic_share_pct", None, "%"),
)
SIDE_GATES = (*(r.gate for r in ROWS if r.gate is not None), "restarts", "crash_loop")
"""Gates judged on each side alike."""
CANARY_GATES = ("traffic_received", "traffic_split", "error_rate_vs_stable", "latency_vs_stable", "memory_vs_stable",
                "firing_alerts")  # fmt: skip
"""Gates that only make sense for the canary (it against stable, its traffic, its alerts)."""


def rows_for(config: CanaryConfig) -> tuple[Row, ...]:
    """The dashboard's rows: the built-in ones, then one per enabled custom gate (CSV column ``custom_<name>``),
    judged on each side alike."""
    custom = [
        Row(settings.description or name, f"custom_{name}", name, settings.unit)
        for name, settings in config.gates.custom().items()
        if settings.enabled
    ]
    return (*ROWS, *custom)


class Status:
    OK, WARNING, CRITICAL, NO_DATA, INCONCLUSIVE, ERROR, NONE = (
        "OK", "WARNING", "CRITICAL", "NO DATA", "TOO FEW", "ERROR", "",
    )  # fmt: skip


STYLE = {Status.OK: "green", Status.WARNING: "yellow", Status.CRITICAL: "bold red", Status.NO_DATA: "dim",
         Status.INCONCLUSIVE: "dim", Status.ERROR: "magenta", Status.NONE: ""}  # fmt: skip


def status_of(outcome: GateResult | CanaryError | None) -> str:
    """A gate's outcome as the dashboard shows it: a breach takes the gate's severity (info shows as a warning)."""
    if outcome is None:
        return Status.NONE
    if isinstance(outcome, CanaryError):
        return Status.ERROR
    if outcome.verdict is Verdict.PASS:
        return Status.OK
    if outcome.verdict is Verdict.NO_DATA:
        return Status.NO_DATA
    if outcome.verdict is Verdict.INCONCLUSIVE:
        return Status.INCONCLUSIVE
    return Status.CRITICAL if outcome.severity is Severity.CRITICAL else Status.WARNING


@dataclass(frozen=True)
class Reading:
    value: float | None
    status: str
    detail: str = ""


@dataclass(frozen=True)
class Recommendation:
    action: str
    """promote, hold, roll back, or unknown (Prometheus could not be read)."""
    reason: str


@dataclass
class Snapshot:
    """One sample: each row's reading per side, the canary-only checks, and the recommendation."""

    time: float
    number: int
    stage: int | None
    stage_inferred: bool
    readings: dict[str, dict[str, Reading]] = field(default_factory=dict)
    """side → CSV column → reading."""
    checks: dict[str, GateResult | CanaryError] = field(default_factory=dict)
    """The canary's other gates and comparisons (vs stable, traffic, alerts, restarts)."""
    recommendation: Recommendation = Recommendation("unknown", "")
    prometheus_error: str = ""
    rows: tuple[Row, ...] = ROWS
    """The rows of this sample: :data:`ROWS` and the config's custom gates."""
    sides: tuple[str, ...] = SIDES
    """The columns: stable and canary, with the baseline between them when there is one."""

    def csv_rows(self) -> list[dict[str, Any]]:
        when = datetime.fromtimestamp(self.time, tz=UTC).isoformat(timespec="seconds")
        rows = []
        for side in self.sides:
            row: dict[str, Any] = {"time": when, "sample": self.number, "side": side, "stage": self.stage}
            for r in self.rows:
                reading = self.readings.get(side, {}).get(r.column)
                row[r.column] = reading.value if reading is not None else None
                if r.judged:
                    row[f"{r.column}_status"] = reading.status if reading is not None else ""
            row.update(recommendation=self.recommendation.action, reason=self.recommendation.reason,
                       prometheus_error=self.prometheus_error)  # fmt: skip
            rows.append(row)
        return rows


def recommend(results: Mapping[str, GateResult | CanaryError]) -> Recommendation:
    """The runner's rule over one set of canary results: a critical failure rolls back; a critical gate that
    cannot decide (no data, too few requests, unreadable) holds; otherwise promote (warnings are named)."""
    critical = {n: r for n, r in results.items() if isinstance(r, CanaryError) or r.severity is Severity.CRITICAL}
    failed = [r for r in critical.values() if isinstance(r, GateResult) and r.verdict is Verdict.FAIL]
    if failed:
        return Recommendation("roll back", "; ".join(f"{r.gate}: {r.summary}" for r in failed))
    undecided = {n: r for n, r in critical.items() if isinstance(r, CanaryError) or r.fails()}
    if undecided:
        why = "; ".join(
            f"{n}: {r.message.splitlines()[0] if isinstance(r, CanaryError) else r.summary}"
            for n, r in undecided.items()
        )
        return Recommendation("hold", why)
    warned = sorted(n for n, r in results.items() if isinstance(r, GateResult) and r.verdict is Verdict.FAIL)
    return Recommendation(
        "promote", "every critical gate passes" + (f" (warnings: {', '.join(warned)})" if warned else "")
    )


def as_side(config: CanaryConfig, side: str) -> CanaryConfig:
    """The config whose "canary" is ``side``'s Deployment (stable, baseline): the gates then judge it by the same
    rules."""
    w = config.workloads
    return config.model_copy(update={"workloads": Workloads(stable=w.canary, canary=getattr(w, side))})


def sides_of(config: CanaryConfig) -> tuple[str, ...]:
    """The monitor's columns: stable and canary, and the baseline between them when there is one."""
    return ("stable", "baseline", "canary") if config.baseline.enabled else SIDES


def _shares(split: GateResult | CanaryError) -> dict[str, float]:
    """Each side's share of the requests, percent, from the traffic split's counts."""
    if not isinstance(split, GateResult):
        return {}
    counts = {side: float(split.details[side]) for side in ("stable", "baseline", "canary") if side in split.details}
    total = sum(counts.values())
    return {side: 100.0 * n / total for side, n in counts.items()} if total else {}


class Monitor:
    def __init__(
        self,
        config: CanaryConfig,
        *,
        stage: int | None = None,
        evidence: Path | None = None,
        source: MetricsSource | None = None,
    ) -> None:
        self.config = config
        self.stage = stage
        self.evidence = evidence
        self.sides = sides_of(config)
        self.sources = {"canary": source or MetricsSource(config)}
        self.sources.update({side: MetricsSource(as_side(config, side)) for side in self.sides if side != "canary"})
        self.number = 0
        self.last_good: float | None = None
        self.rows = rows_for(config)
        self.side_gates = (*SIDE_GATES, *(r.gate for r in self.rows[len(ROWS) :] if r.gate is not None))
        """The gates judged on each side: the built-in ones of the rows, restarts, and the custom gates."""

    def sample(self) -> Snapshot:
        self.number += 1
        now = self.sources["canary"].now()
        canary_cfg = self.config
        source = self.sources["canary"]
        stage = self.stage
        if stage is None:  # the split first: it says which stage's thresholds apply
            split = evaluate(canary_cfg, source, ["traffic_split"], at=now)["traffic_split"]
            stage = nearest_stage(self.config, split.value if isinstance(split, GateResult) else None)
        snap = Snapshot(now, self.number, stage, self.stage is None, rows=self.rows, sides=self.sides)
        canary = evaluate(canary_cfg, source, (*self.side_gates, *CANARY_GATES), stage=stage, at=now)
        judged = canary["traffic_split"]
        shares = _shares(judged)
        by_side = {side: canary if side == "canary" else evaluate(
            as_side(self.config, side), self.sources[side], self.side_gates, stage=stage, at=now
        ) for side in self.sides}  # fmt: skip
        raw = self._plain_readings(now)
        unreachable = [
            r for results in by_side.values() for r in results.values()
            if isinstance(r, PrometheusError) and _unreadable(r)
        ]  # fmt: skip
        if unreachable:
            snap.prometheus_error = unreachable[0].headline
            snap.recommendation = Recommendation("unknown", f"Prometheus cannot be read: {snap.prometheus_error}")
            for side in self.sides:
                snap.readings[side] = {r.column: Reading(None, Status.ERROR) for r in self.rows}
            return snap
        self.last_good = now
        comparisons = self._compare(now)
        for side, results in by_side.items():
            readings = {}
            for row in self.rows:
                if row.gate is not None:
                    outcome = results[row.gate]
                    value = outcome.value if isinstance(outcome, GateResult) else None
                    readings[row.column] = Reading(value, status_of(outcome), _detail(outcome))
                elif row.column == "traffic_share_pct":
                    value = shares.get(side)
                    readings[row.column] = Reading(
                        value, status_of(judged) if side == "canary" else "", _detail(judged)
                    )
                else:
                    readings[row.column] = Reading(raw[side].get(row.column), Status.NONE)
            snap.readings[side] = readings
        snap.checks = {n: canary[n] for n in ("restarts", "crash_loop", *CANARY_GATES) if n != "traffic_split"}
        snap.checks.update(comparisons)
        snap.recommendation = recommend({**canary, **comparisons})
        return snap

    def _plain_readings(self, now: float) -> dict[str, dict[str, float | None]]:
        """Readings no gate judges: request rate and p50, of each side."""
        out: dict[str, dict[str, float | None]] = {}
        source = self.sources["canary"]
        window = self.config.window
        queries = {}
        for side in self.sides:
            queries[side, "request_rate_rps"] = source.render("requests", side=side)
            queries[side, "latency_p50_ms"] = source.render("latency", side=side, quantile=0.5)
        answers = source.query_many(queries.values(), at=now)
        for (side, column), q in queries.items():
            answer = answers[q]
            value = None
            if not isinstance(answer, CanaryError) and answer:
                values = [s.value for s in answer if math.isfinite(s.value)]
                if values:
                    value = sum(values) / window if column == "request_rate_rps" else max(values)
            out.setdefault(side, {})[column] = value
        return out

    def _compare(self, now: float) -> dict[str, GateResult | CanaryError]:
        """The sequential comparisons (anytime-valid, so checking at every sample is sound); the fixed-horizon
        resource comparisons are left to the suite."""
        stats = self.config.statistics
        names = [n for n, c in comparisons_of(stats).items() if c.family != "resources" and c.settings(stats).enabled]
        if self.evidence is None or not names:
            return {}
        try:
            return evaluate_comparisons(self.config, self.sources["canary"], names, evidence_file=self.evidence, at=now)
        except CanaryError as e:
            return {n: e for n in names}


def _detail(outcome: GateResult | CanaryError) -> str:
    return outcome.message.splitlines()[0] if isinstance(outcome, CanaryError) else outcome.summary


# ---- output ------------------------------------------------------------------------------------------------------


def _short(unit: str) -> str:
    """A unit as a cell shows it: its first word ("% of limit" → "%"); a custom gate's may be empty."""
    return next(iter(unit.split()), "")


def _number(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "∞"
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"{value:.{digits}f} {_short(unit)}".rstrip()


def _threshold(config: CanaryConfig, row: Row, stage: int | None) -> str:
    if row.column == "traffic_share_pct":
        return f"stage {stage} % ± {config.gates_for(stage).traffic_split.threshold:g}" if stage is not None else "—"
    if row.gate is None:
        return ""
    thresholds = config.gates_for(stage)
    found = gates_of(thresholds)[row.gate]
    below, gate = found.fails_below, found.settings(thresholds)
    limit = f"{gate.threshold:g} {_short(row.unit)}".rstrip()
    return f"{'≥' if below else '≤'} {limit} ({gate.severity.value})"


ACTION_STYLE = {"promote": "bold green", "hold": "bold yellow", "roll back": "bold red", "unknown": "bold magenta"}


def dashboard(config: CanaryConfig, snap: Snapshot | None, *, interval: float, next_in: float) -> Group:
    """The rich renderable of one sample (and the countdown to the next)."""
    head = Text.assemble(
        ("canary-checks monitor", "bold"),
        f" — {config.workload('canary')} vs {config.workload(config.reference)} in {config.namespace}",
    )
    if snap is None:
        return Group(head, Text(f"taking the first sample from {config.prometheus.shown_url} …", style="dim"))
    stage = f"stage {snap.stage} %" + (" (nearest to the split)" if snap.stage_inferred else "") if snap.stage else (
        "stage unknown (no traffic split)")  # fmt: skip
    clock = datetime.fromtimestamp(snap.time).strftime("%H:%M:%S")
    info = Text(
        f"{stage} · window {config.window:g}s · sample {snap.number} at {clock} · next in {max(next_in, 0):.0f}s "
        f"(every {interval:g}s) · Prometheus {config.prometheus.shown_url}",
        style="dim",
    )
    parts: list[Any] = [head, info]
    if snap.prometheus_error:
        banner = f"{_banner(snap.prometheus_error)}: {snap.prometheus_error} — still trying every {interval:g}s"
        parts.append(Text(banner, style="bold white on red"))
    table = Table(expand=False, pad_edge=False)
    table.add_column("metric")
    for side in snap.sides:
        table.add_column(side, justify="right")
    table.add_column("threshold", style="dim")
    for row in snap.rows:
        cells = []
        for side in snap.sides:
            reading = snap.readings.get(side, {}).get(row.column, Reading(None, Status.NONE))
            text = Text(_number(reading.value, row.unit))
            if reading.status:
                text.append(f" {reading.status}", style=STYLE[reading.status])
                text.stylize(STYLE[reading.status], 0, len(text))
            cells.append(text)
        table.add_row(row.label, *cells, _threshold(config, row, snap.stage))
    parts.append(table)
    if snap.checks:
        checks = Table(title="canary checks", title_justify="left", expand=False, pad_edge=False)
        checks.add_column("check")
        checks.add_column("status")
        checks.add_column("what was measured", overflow="ellipsis", no_wrap=True, max_width=100)
        for name, outcome in snap.checks.items():
            status = status_of(outcome)
            checks.add_row(name, Text(status, style=STYLE[status]), _detail(outcome))
        parts.append(checks)
    rec = snap.recommendation
    parts.append(Text.assemble(("RECOMMENDATION: ", "bold"), (rec.action.upper(), ACTION_STYLE[rec.action]),
                               f" — {rec.reason}"))  # fmt: skip
    return Group(*parts)


def _unreadable(result: PrometheusError) -> bool:
    """Prometheus itself cannot be read (every cell would error alike): unreachable, or refusing the credentials."""
    if isinstance(result, PrometheusUnreachable):
        return True
    return isinstance(result, PrometheusQueryError) and result.status in (401, 403, 407)


def _banner(error: str) -> str:
    return "PROMETHEUS UNREACHABLE" if ": answered HTTP 40" not in error else "PROMETHEUS REFUSES THE QUERIES"


def plain_line(snap: Snapshot) -> str:
    """One line per sample for logs and pipes."""
    clock = datetime.fromtimestamp(snap.time, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if snap.prometheus_error:
        return f"{clock} sample {snap.number}: {_banner(snap.prometheus_error).capitalize()}: {snap.prometheus_error}"
    cells = []
    for row in snap.rows:
        values = []
        for side in snap.sides:
            reading = snap.readings[side][row.column]
            values.append(
                _number(reading.value, row.unit).replace(" ", "") + (f" {reading.status}" if reading.status else "")
            )
        cells.append(f"{row.label} {' / '.join(values)}")
    rec = snap.recommendation
    stage = f"stage {snap.stage}" if snap.stage is not None else "stage unknown (no traffic split)"
    return (f"{clock} sample {snap.number} {stage} ({' / '.join(snap.sides)}): " + "; ".join(cells)
            + f" | {rec.action.upper()}: {rec.reason}")  # fmt: skip


class CsvExport:
    """Appends every sample to a CSV as it is taken, so an interrupted monitor loses nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self.rows = 0

    def write(self, snap: Snapshot) -> None:
        import pandas as pd

        frame = pd.DataFrame(snap.csv_rows())
        frame.to_csv(self.path, mode="a", header=self.rows == 0, index=False)
        self.rows += len(frame)


def run(
    monitor: Monitor,
    *,
    interval: float,
    duration: float | None,
    console: Console,
    export: CsvExport | None = None,
    live: bool | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Sample every ``interval`` seconds for ``duration`` (None: until interrupted); returns the samples taken."""
    live = console.is_terminal if live is None else live
    end = None if duration is None else clock() + duration
    taken = 0

    def due() -> bool:
        return end is None or clock() < end

    if not live:
        while due():
            start = clock()
            sample = monitor.sample()
            taken += 1
            console.print(plain_line(sample), markup=False, highlight=False, soft_wrap=True)
            if export:
                export.write(sample)
            _wait(start + interval, end, clock)
        return taken
    snap: Snapshot | None = None
    with Live(dashboard(monitor.config, None, interval=interval, next_in=interval), console=console,
              refresh_per_second=4, transient=False) as screen:  # fmt: skip
        while due():
            start = clock()
            snap = monitor.sample()
            taken += 1
            if export:
                export.write(snap)
            while due() and (left := start + interval - clock()) > 0:
                screen.update(dashboard(monitor.config, snap, interval=interval, next_in=left))
                time.sleep(min(1.0, left))
    return taken


def _wait(until: float, end: float | None, clock: Callable[[], float]) -> None:
    stop = until if end is None else min(until, end)
    while (left := stop - clock()) > 0:
        time.sleep(min(0.5, left))
