"""How long the gate suite takes against a live sandbox, compared with collection alone.

    .venv/bin/python bench/gate_suite.py [--runs 7]

Starts its own sandbox on free ports (real Prometheus, HAProxy, demo pods, Locust), lets a window of traffic pass,
then times `pytest suites/gate --stage 25` and `pytest suites/gate --stage 25 --collect-only`, each as a fresh
process as a user runs them, and each as the runner runs them: forked from the warm server (canary_checks.forks).
Target: the full gate set adds at most 2 s over collection, as the runner runs it; a fresh process's figure (which
also imports SciPy on the way) is printed beside it.
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from canary_checks.config import load_config
from canary_checks.forks import prepare, run_pytest
from canary_checks.sandbox import Sandbox, free_port_settings
from canary_checks.suite import packaged

REPO = Path(__file__).resolve().parents[1]


def timed(cmd: list[str]) -> tuple[float, int]:
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start, done.returncode


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # killed: the sandbox is stopped, as on Ctrl-C
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
            times: dict[str, list[float]] = {"full": [], "collect": [], "forked full": [], "forked collect": []}
            prepare()  # as a runner does: its suites fork from the warm server, started once
            run_pytest(base[3:], 120)
            for _ in range(args.runs):
                for name, cmd in (("full", base), ("collect", [*base, "--collect-only"])):
                    seconds, code = timed(cmd)
                    start = time.perf_counter()
                    forked, _ = run_pytest(cmd[3:], 120)
                    times[f"forked {name}"].append(time.perf_counter() - start)
                    if code != 0 or forked != 0:
                        raise SystemExit(f"the gate suite failed on a healthy sandbox (exit {code}, forked {forked})")
                    times[name].append(seconds)
        finally:
            box.down()
    f, c, ff, fc = (statistics.median(times[k]) for k in ("full", "collect", "forked full", "forked collect"))
    print(f"runs: {args.runs} each (median)")
    print(f"pytest suites/gate --stage 25                : {f:.2f} s fresh process, {ff:.2f} s as the runner runs it")
    print(f"pytest suites/gate --stage 25 --collect-only : {c:.2f} s fresh process, {fc:.2f} s as the runner runs it")
    print(f"gates over collection, as the runner runs it : {ff - fc:.2f} s (target <= 2 s)")
    print(f"gates over collection, in a fresh process    : {f - c:.2f} s (SciPy's import among them)")
    if ff - fc > 2:
        raise SystemExit("over the target")


if __name__ == "__main__":
    main()
