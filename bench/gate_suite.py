"""How long the gate suite takes against a live sandbox, compared with collection alone.

    .venv/bin/python bench/gate_suite.py [--runs 7]

Starts its own sandbox on free ports (real Prometheus, HAProxy, demo pods, Locust), lets a window of traffic pass,
then times `pytest suites/gate --stage 25` and `pytest suites/gate --stage 25 --collect-only`, each as a fresh
process, as a user or the runner would run them. Target: the full gate set adds at most 2 s over collection.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from canary_checks.config import load_config
from canary_checks.sandbox import Sandbox, free_port_settings
from canary_checks.suite import packaged

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start, done.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "canary.yaml"
        sandbox = free_port_settings(Path(tmp) / "state", rps=200)
        path.write_text(
            yaml.safe_dump(
                {
                    "window": "10s",
                    "prometheus": {"url": f"http://127.0.0.1:{sandbox['prometheus_port']}"},
                    "sandbox": sandbox,
                }
            )
        )
        box = Sandbox(load_config(path))
        box.up(weight=25)
        try:
            box.wait_for_data()
            time.sleep(12)
            base = [
                sys.executable,
                "-m",
                "pytest",
                str(packaged("gate")),
                "--stage",
                "25",
                "--canary-config",
                str(path),
            ]
            base += ["-q", "-p", "no:cacheprovider"]
            full, collect = [], []
            for _ in range(args.runs):
                seconds, code = timed(base)
                if code != 0:
                    raise SystemExit(f"the gate suite failed on a healthy sandbox (exit {code})")
                full.append(seconds)
                collect.append(timed([*base, "--collect-only"])[0])
        finally:
            box.down()
    f, c = statistics.median(full), statistics.median(collect)
    print(f"runs: {args.runs} each (median, fresh process each)")
    print(f"pytest suites/gate --stage 25                : {f:.2f} s")
    print(f"pytest suites/gate --stage 25 --collect-only : {c:.2f} s")
    print(f"gates over collection                        : {f - c:.2f} s (target <= 2 s)")


if __name__ == "__main__":
    main()
