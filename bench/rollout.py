"""The runner in the sandbox: rollback time and overhead.

    .venv/bin/python bench/rollout.py [--runs 10]

Starts its own sandbox on free ports (real Prometheus, HAProxy, demo pods, Locust at 200 req/s), then:
- rollback time: --runs rollouts of a canary answering 30 % errors; each is rolled back by the critical-gate poll
  at its first stage; the figure is the runner's own record (events.jsonl `rollback_seconds`): from the failing
  verdict to HAProxy confirming weight 0. Also the time from the fault being visible to the runner's first poll.
- overhead: one healthy rollout through 5, 25, 50, 100 %: wall time minus the configured waits (the steps, and the
  1 s extension of a stage that held). Its 13 s stages give the canary ~130 requests at 5 %, too few for the
  comparisons with stable to decide; the bench measures the runner, not the statistics, so it goes on past them
  (`--on-undecided proceed --max-extension 1s`) and prints how many stages did; their extra look counts as overhead.
Targets: median rollback < 1 s; overhead < 10 % of the total. The exit status is 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from canary_checks.config import load_config
from canary_checks.sandbox import Sandbox, free_port_settings

REPO = Path(__file__).resolve().parents[1]
WINDOW = 10
STEP = WINDOW + 3
EXTENSION = 1.0
"""--max-extension: how long an undecided stage holds before it goes on (a configured wait, as the steps are)."""
ROLLBACK_TARGET = 1.0
"""Seconds from the failing verdict to weight 0 confirmed, the median of the runs."""
OVERHEAD_TARGET = 10.0
"""Percent of a healthy rollout's wall time that is not its configured waits."""


def rollout(config: Path, reports: Path, image: str, *args: str) -> tuple[int, float, str]:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "canary_checks", "--canary-config", str(config), "run", "auth", image, "--router",
         "sandbox", "--reports", str(reports), *args],
        cwd=REPO, capture_output=True, text=True, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    return done.returncode, time.perf_counter() - start, done.stdout + done.stderr


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # killed: the sandbox is stopped, as on Ctrl-C
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sandbox = free_port_settings(root / "state", rps=200)
        config = root / "canary.yaml"
        config.write_text(yaml.safe_dump({
            "window": f"{WINDOW}s", "kubernetes": {"enabled": False}, "sandbox": sandbox,
            "prometheus": {"url": f"http://127.0.0.1:{sandbox['prometheus_port']}"},
        }))  # fmt: skip
        box = Sandbox(load_config(config))
        box.up(weight=0)
        try:
            box.wait_for_data()
            time.sleep(WINDOW + 2)
            code, total, output = rollout(
                config,
                root / "healthy",
                "demo:v2",
                "--auto-promote",
                "--step-duration",
                f"{STEP}s",
                "--poll-interval",
                "5s",
                "--on-undecided",
                "proceed",
                "--max-extension",
                f"{EXTENSION:g}s",
            )
            if code != 0:
                raise SystemExit(f"the healthy rollout failed:\n{output}")
            (healthy_log,) = (root / "healthy").glob("*/events.jsonl")
            healthy = [json.loads(line)["event"] for line in healthy_log.read_text().splitlines()]
            undecided = healthy.count("proceeded undecided")
            waits = 4 * STEP + undecided * EXTENSION  # an undecided stage waits out its configured extension too
            seconds = []
            box.set_faults("canary", {"errors": 30})
            time.sleep(WINDOW + 2)
            for run in range(args.runs):
                reports = root / f"failing-{run}"
                code, _, output = rollout(
                    config, reports, f"demo:bad{run}", "--traffic-steps", "25,100", "--step-duration", "60s",
                    "--poll-interval", "1s",
                )  # fmt: skip
                if code != 1:
                    raise SystemExit(f"run {run}: expected a rollback, got exit {code}:\n{output}")
                (log,) = reports.glob("*/events.jsonl")
                events = [json.loads(line) for line in log.read_text().splitlines()]
                seconds.append(next(e["rollback_seconds"] for e in events if e["event"] == "rolled back"))
        finally:
            box.down()
    median, overhead = statistics.median(seconds), 100 * (total - waits) / total
    print(f"rollback, failing verdict -> weight 0 confirmed by HAProxy, {args.runs} runs:")
    print(f"  median {median * 1000:.1f} ms, max {max(seconds) * 1000:.1f} ms (target < {ROLLBACK_TARGET:g} s)")
    print(f"healthy rollout 5 -> 25 -> 50 -> 100 % with {STEP} s steps: {total:.1f} s wall, {waits:g} s of waits")
    print(f"  promoted; {undecided} of 4 stages went on with comparisons still undecided (too few requests)")
    print(f"  runner overhead {total - waits:.1f} s = {overhead:.1f} % of the total (target < {OVERHEAD_TARGET:g} %)")
    missed = [what for what, bad in (("rollback", median >= ROLLBACK_TARGET), ("overhead", overhead >= OVERHEAD_TARGET))
              if bad]  # fmt: skip
    if missed:
        raise SystemExit(f"target missed: {', '.join(missed)}")


if __name__ == "__main__":
    main()
