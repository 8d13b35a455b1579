"""What people wait for around a release, in the sandbox: a monitor sample, a report, a webhook answer, smoke.

    .venv/bin/python bench/integrations.py [--repeat 10]

Starts its own sandbox on free ports (real Prometheus, HAProxy, demo pods, Locust at 200 req/s, canary at 25 %),
then measures (median and max of --repeat):
- one monitor sample: both sides' gates, the plain readings and the sequential comparisons, at one instant;
- a report: series.json from Prometheus (8 range queries over 30 minutes) and summary.json + report.html with its
  three plots, for a recorded gate run;
- a Flagger webhook: POST /flagger/rollout to `canary-checks serve` until the answer (the gate suite in pytest);
- the smoke suite: `pytest suites/smoke` wall time.
Targets: a monitor sample well under its 10 s default interval; a webhook answer under Flagger's usual 30-60 s
webhook timeout.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import yaml

from canary_checks.config import load_config
from canary_checks.monitor import Monitor
from canary_checks.prometheus import MetricsSource
from canary_checks.report import build_report, record_series
from canary_checks.sandbox import Sandbox, free_port_settings
from canary_checks.suite import packaged

REPO = Path(__file__).resolve().parents[1]
WINDOW = 10


def timed(repeat: int, action: Callable[[], object]) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), max(times)


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # killed: the sandbox is stopped, as on Ctrl-C
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sandbox = free_port_settings(root / "state", rps=200)
        config_path = root / "canary.yaml"
        config_path.write_text(yaml.safe_dump({
            "window": f"{WINDOW}s", "kubernetes": {"enabled": False}, "sandbox": sandbox,
            "statistics": {"sample_interval": "2s", "worse_delta": 2},
            "prometheus": {"url": f"http://127.0.0.1:{sandbox['prometheus_port']}"},
            "smoke": {"served_by_header": "x-served-by",
                      "requests": [{"name": "item", "path": "/api/items/1", "status": 200}]},
        }))  # fmt: skip
        config = load_config(config_path)
        box = Sandbox(config)
        box.up(weight=25)
        try:
            box.wait_for_data()
            time.sleep(WINDOW + 2)
            monitor = Monitor(config, evidence=root / "evidence.json")
            sample = timed(args.repeat, monitor.sample)

            gate_run = subprocess.run(
                [sys.executable, "-m", "pytest", str(packaged("gate")), "--stage", "25", "--canary-config",
                 str(config_path), "--canary-reports", str(root / "reports"), "-q", "-p", "no:cacheprovider"],
                cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            (run_dir,) = (root / "reports").glob("gate-*")
            source = MetricsSource(config)
            now = time.time()
            series = timed(args.repeat, lambda: record_series(config, source, run_dir, now - 1800, now))
            report = timed(args.repeat, lambda: build_report(run_dir))

            smoke = timed(args.repeat, lambda: subprocess.run(
                [sys.executable, "-m", "pytest", str(packaged("smoke")), "--canary-config", str(config_path),
                 "--no-canary-report", "-q", "-p", "no:cacheprovider"],
                cwd=REPO, capture_output=True, stdin=subprocess.DEVNULL, check=True))  # fmt: skip

            port = sandbox["node_port"] + 50
            server = subprocess.Popen(
                [sys.executable, "-m", "canary_checks", "--canary-config", str(config_path), "serve", "--port",
                 str(port), "--reports", str(root / "webhooks")],
                cwd=REPO, env={**os.environ, "CANARY_WEBHOOK_TOKEN": "bench"}, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                for _ in range(100):
                    try:
                        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).close()
                        break
                    except OSError:
                        time.sleep(0.1)
                body = json.dumps({"name": "auth", "namespace": "orion", "metadata": {"stage": "25"}}).encode()

                def call() -> None:
                    request = urllib.request.Request(f"http://127.0.0.1:{port}/flagger/rollout", body,
                                                     {"Authorization": "Bearer bench"}, method="POST")  # fmt: skip
                    with contextlib.suppress(urllib.error.HTTPError):  # 412 while comparisons hold: an answer too
                        urllib.request.urlopen(request, timeout=120).close()

                webhook = timed(args.repeat, call)
            finally:
                server.terminate()
                server.wait(timeout=30)
        finally:
            box.down()
    print(f"sandbox, 200 req/s, canary at 25 %, {args.repeat} repeats (median / max)")
    print(f"  monitor sample (both sides, comparisons)   {sample[0]:6.2f} s / {sample[1]:6.2f} s")
    print(f"  series.json (30 min, 8 range queries)      {series[0]:6.2f} s / {series[1]:6.2f} s")
    print(f"  summary.json + report.html (3 plots)       {report[0]:6.2f} s / {report[1]:6.2f} s")
    print(f"  smoke suite (pytest, 4 checks)             {smoke[0]:6.2f} s / {smoke[1]:6.2f} s")
    print(f"  Flagger webhook, rollout hook (gate suite) {webhook[0]:6.2f} s / {webhook[1]:6.2f} s")
    print(f"  gate run exit {gate_run.returncode} (its report: {run_dir.name})")


if __name__ == "__main__":
    main()
