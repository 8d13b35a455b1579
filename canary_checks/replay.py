"""Offline replay: the gates and comparisons evaluated on recorded metrics instead of a live Prometheus.

A team exports what a past release looked like (:func:`export`: Prometheus' own ``query_range`` answer — raw
counters and buckets — for the series the gates read) and replays it (:func:`replay`): would the gates have caught
that incident, would they have rolled back that good release?

The recording is loaded into a *real* Prometheus, not re-implemented: ``promtool tsdb create-blocks-from
openmetrics`` writes it as TSDB blocks and a private Prometheus (Debian's, on a free loopback port, no scraping)
answers the gates' very own PromQL at each replayed instant. The comparisons' sequential evidence accumulates from
the first replayed instant, exactly as it would have during the release.
"""

from __future__ import annotations

import json
import math
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from canary_checks.compare import comparisons_of, evaluate_comparisons
from canary_checks.config import CanaryConfig, Mesh
from canary_checks.errors import CanaryError, ConfigError, MissingBinary, SandboxError
from canary_checks.gates import GateResult, Verdict, evaluate, gates_of
from canary_checks.prometheus import MESH_METRICS, MetricsSource, escape_label, selectors_in

__all__ = ["ReplayStep", "export", "exported_series", "recorded_prometheus", "replay"]

# What the gates read besides the mesh's own request metrics (cAdvisor, kube-state-metrics, the canary alerts).
_COMMON = (
    ("container_cpu_usage_seconds_total", "namespace"),
    ("container_memory_working_set_bytes", "namespace"),
    ("kube_pod_container_resource_limits", "namespace"),
    ("kube_pod_status_ready", "namespace"),
    ("kube_deployment_spec_replicas", "namespace"),
    ("kube_pod_container_status_restarts_total", "namespace"),
    ("kube_pod_container_status_waiting_reason", "namespace"),
    ("ALERTS", "namespace"),
    ("canary:request_rate:5m", "namespace"),  # where the canary rules are evaluated: the alerts gate needs it
)


def exported_series(config: CanaryConfig) -> list[str]:
    """The selectors an export needs for ``config``'s namespace: every series the gates and comparisons read — the
    built-in ones', and those the custom gates' and comparisons' own queries select."""
    if config.mesh is Mesh.CUSTOM:
        raise ConfigError(
            "replay needs a known mesh (istio or linkerd) to know which series to export",
            where="mesh",
            fix="export the series your custom queries read with Prometheus' /api/v1/query_range yourself",
        )
    mesh = MESH_METRICS[config.mesh]
    ns = escape_label(config.namespace)
    names = [(mesh.requests, mesh.namespace), (mesh.buckets, mesh.namespace), *_COMMON]
    return list(dict.fromkeys([*(f'{name}{{{label}="{ns}"}}' for name, label in names), *_custom_series(config)]))


def _custom_series(config: CanaryConfig) -> list[str]:
    """What the custom gates (of any stage) and custom comparisons select, as they are rendered for the canary (and
    each comparison for the side it is compared with as well)."""
    source = MetricsSource(config)
    queries: dict[str, str] = {}
    for thresholds in [config.gates, *(config.gates_for(stage) for stage in config.stages)]:
        for name, gate in gates_of(thresholds).items():
            if gate.custom is not None:  # the queries the gate itself sends
                queries.update(dict.fromkeys(gate.needs(source).values(), f"gates.{name}.query"))
    for key, comparison in config.statistics.custom().items():
        for side in dict.fromkeys(("canary", config.reference)):
            for part in ("numerator", "denominator"):
                where = f"statistics.{key}.{part}"
                queries[source.render_template(getattr(comparison, part), side=side, where=where)] = where
    return [selector for query, where in queries.items() for selector in selectors_in(query, where=where)]


def export(
    config: CanaryConfig, start: float, end: float, step: float, *, progress: Callable[[str], None] = print
) -> dict[str, Any]:
    """Prometheus' ``query_range`` answer (one matrix) for every series the gates read between ``start`` and
    ``end``, sampled every ``step`` seconds: raw counters and buckets, so rates can be recomputed at replay."""
    source = MetricsSource(config)
    result: dict[frozenset[tuple[str, str]], dict[str, Any]] = {}  # a series two selectors match is written once
    for selector in exported_series(config):
        series = source.query_range(selector, start, end, step)
        progress(f"exported {len(series)} series of {selector}")
        for s in series:
            result[frozenset(s.labels.items())] = {
                "metric": dict(s.labels), "values": [[t, repr(v)] for t, v in zip(s.times, s.values, strict=True)]
            }  # fmt: skip
    return {"status": "success", "data": {"resultType": "matrix", "result": list(result.values())}}


def _load_export(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read the export {path}: {e.strerror}", where="EXPORT") from e
    except ValueError as e:
        raise ConfigError(f"the export {path} is not JSON ({e})", where="EXPORT",
                          fix="pass the JSON Prometheus answered to /api/v1/query_range") from e  # fmt: skip
    answers = data if isinstance(data, list) else [data]
    series: list[dict[str, Any]] = []
    for answer in answers:
        inner = answer.get("data", answer) if isinstance(answer, dict) else None
        if not isinstance(inner, dict) or inner.get("resultType") != "matrix":
            raise ConfigError(
                f"{path} is not a query_range answer (expected data.resultType 'matrix')",
                where="EXPORT",
                fix="export with 'canary-checks replay export' or Prometheus' /api/v1/query_range",
            )
        series.extend(inner.get("result", []))
    if not series:
        raise ConfigError(f"{path} holds no series", where="EXPORT", fix="export a range where the release ran")
    for number, one in enumerate(series, 1):
        if problem := _malformed(one):
            shape = '{"metric": {labels}, "values": [[time, "value"], ...]}'
            raise ConfigError(f"{path}: series {number} of {len(series)} {problem}", where="EXPORT",
                              fix=f"export with 'canary-checks replay export' or Prometheus' /api/v1/query_range "
                                  f"(each series {shape})")  # fmt: skip
    return series


def _malformed(series: Any) -> str:
    """What is wrong with one series of a query_range answer ("" when nothing)."""
    if not isinstance(series, dict) or not isinstance(series.get("metric", {}), dict):
        return "is not an object with a 'metric' object of labels"
    if not isinstance(values := series.get("values", []), list):
        return "has 'values' that are not a list of [time, value] pairs"
    for point in values:
        try:
            t, v = point
            float(t), float(v)
        except (TypeError, ValueError):
            return f"has a sample that is not a [time, value] pair of numbers: {json.dumps(point)[:80]}"
    return ""


def _openmetrics(series: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    for s in series:
        labels = dict(s.get("metric", {}))
        name = labels.pop("__name__", None)
        if not name:
            continue
        text = ",".join(f'{k}="{escape_label(str(v))}"' for k, v in sorted(labels.items()))
        head = f"{name}{{{text}}}" if text else name
        for t, v in sorted(s.get("values", []), key=lambda p: float(p[0])):
            value = float(v)
            if math.isnan(value):
                continue
            yield f"{head} {v} {float(t):.3f}"
    yield "# EOF"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def recorded_prometheus(export_file: Path, *, workdir: Path | None = None) -> Iterator[tuple[str, float, float]]:
    """A private Prometheus serving the recording: yields (url, first sample time, last sample time)."""
    for binary in ("promtool", "prometheus"):
        if shutil.which(binary) is None:
            raise MissingBinary(
                f"'{binary}' is not installed (not found on PATH)",
                where="canary-checks replay",
                fix="install the Debian package: sudo apt-get install -y prometheus  (./dev does it for you)",
            )
    series = _load_export(export_file)
    times = [float(t) for s in series for t, _ in s.get("values", [])]
    if not times:
        raise ConfigError(f"{export_file} holds no samples", where="EXPORT")
    with tempfile.TemporaryDirectory(prefix="canary-replay-", dir=workdir) as tmp:
        d = Path(tmp)
        (d / "series.om").write_text("\n".join(_openmetrics(series)) + "\n")
        made = subprocess.run(
            ["promtool", "tsdb", "create-blocks-from", "openmetrics", str(d / "series.om"), str(d / "data")],
            capture_output=True, text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        if made.returncode != 0:
            raise SandboxError(
                f"promtool could not load the export: {made.stderr.strip()[-500:]}",
                where=str(export_file),
                fix="check that the export is a query_range answer with raw series",
            )
        (d / "prometheus.yml").write_text("global: {}\nscrape_configs: []\n")
        port = _free_port()
        proc = subprocess.Popen(
            ["prometheus", f"--config.file={d / 'prometheus.yml'}", f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={d / 'data'}", "--storage.tsdb.retention.time=100y",
             "--query.lookback-delta=5m"],
            stdout=subprocess.DEVNULL, stderr=(d / "prometheus.log").open("w"), stdin=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if requests.get(f"{url}/-/ready", timeout=1).ok:
                        break
                except requests.RequestException:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (d / "prometheus.log").read_text()[-800:]
                    raise SandboxError(f"the replay Prometheus did not start: {log}", where=url)
                time.sleep(0.2)
            yield url, min(times), max(times)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass(frozen=True)
class ReplayStep:
    at: float
    results: Mapping[str, GateResult | CanaryError] = field(default_factory=dict)

    def failing(self, *, strict: bool = False) -> list[GateResult]:
        return [r for r in self.results.values() if isinstance(r, GateResult) and r.verdict is Verdict.FAIL
                and r.fails(strict=strict)]  # fmt: skip

    def held(self, *, strict: bool = False) -> list[str]:
        """Gates that would have held the stage (errors, or critical no data / inconclusive)."""
        held = [n for n, r in self.results.items() if isinstance(r, CanaryError)]
        held += [r.gate for r in self.results.values()
                 if isinstance(r, GateResult) and r.verdict is not Verdict.FAIL and r.fails(strict=strict)]  # fmt: skip
        return held


def replay(
    config: CanaryConfig,
    export_file: Path,
    *,
    every: float = 30.0,
    stage: int | None = None,
    start: float | None = None,
    end: float | None = None,
    on_step: Callable[[ReplayStep], None] | None = None,
) -> list[ReplayStep]:
    """Evaluate every Prometheus gate (built-in and custom) and every comparison (built-in and custom) at each
    ``every`` seconds of the recording."""
    if every <= 0:
        raise ConfigError(f"--every must be positive; got {every:g}", where="--every")
    with recorded_prometheus(export_file) as (url, first, last):
        recorded = config.model_copy(update={"prometheus": config.prometheus.open_at(url)})
        source = MetricsSource(recorded)
        thresholds = config.gates_for(stage)  # a stage's thresholds, and the custom gates it adds
        gates = [n for n, g in gates_of(thresholds).items()
                 if g.source in ("prometheus", "custom") and g.settings(thresholds).enabled]  # fmt: skip
        comparisons = [n for n, c in comparisons_of(config.statistics).items() if c.settings(config.statistics).enabled]
        t = max(start if start is not None else first + config.window, first + 1)
        stop = min(end if end is not None else last, last)
        if t > stop and start is None and end is None:  # the first look is a window in: none fits
            raise ConfigError(
                f"the recording spans {_when(first)} to {_when(last)}, less than one window ({config.window:g}s): "
                "no instant has a window of it to judge",
                where="EXPORT", fix="export a longer range (at least a window, better the whole release)",
            )  # fmt: skip
        if t > stop:
            raise ConfigError(
                f"nothing to replay between {_when(t)} and {_when(stop)} (the recording spans {_when(first)} to "
                f"{_when(last)})",
                where="--start/--end",
            )
        steps = []
        with tempfile.TemporaryDirectory(prefix="canary-replay-evidence-") as tmp:
            evidence = Path(tmp) / "evidence.json"
            while t <= stop + 1e-6:
                results = evaluate(recorded, source, gates, stage=stage, at=t)
                results.update(evaluate_comparisons(recorded, source, comparisons, evidence_file=evidence, at=t))
                step = ReplayStep(t, results)
                steps.append(step)
                if on_step is not None:
                    on_step(step)
                t += every
        return steps


def _when(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
