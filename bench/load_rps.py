"""Requests per second Locust sustains through HAProxy to the demo service on this machine.

    .venv/bin/python bench/load_rps.py [--rates 500,1000,1500,2000] [--seconds 30]

For each offered rate, starts a sandbox on free ports with Locust at that rate, waits for the load to ramp up,
then measures what the pods actually answered from Prometheus (sum of istio_requests_total over the window,
reporter="destination") and what Locust counted as failures. Target: >= 1000 req/s on 2 cores.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import yaml

from canary_checks.config import load_config
from canary_checks.sandbox import Sandbox, free_port_settings

REPO = Path(__file__).resolve().parents[1]


def prometheus_rate(url: str, seconds: int) -> float:
    query = f"sum(increase(istio_requests_total[{seconds}s])) / {seconds}"
    with urllib.request.urlopen(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": query}), timeout=5) as r:
        result = json.loads(r.read())["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def locust_totals(state_dir: Path) -> tuple[int, int]:
    with open(state_dir / "locust_stats.csv") as f:
        row = next(r for r in csv.DictReader(f) if r["Name"] == "Aggregated")
    return int(row["Request Count"]), int(row["Failure Count"])


def measure(rate: float, seconds: int) -> tuple[float, int, int]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "canary.yaml"
        sandbox = free_port_settings(Path(tmp) / "state", rps=rate)
        path.write_text(yaml.safe_dump({"sandbox": sandbox}))
        box = Sandbox(load_config(path))
        box.up(weight=25)
        try:
            box.wait_for_data()
            time.sleep(10)  # ramp-up
            _, failures_before = locust_totals(box.state_dir)
            time.sleep(seconds + 2)
            answered = prometheus_rate(box.prometheus_url, seconds)
            requests, failures = locust_totals(box.state_dir)
        finally:
            box.down()
    return answered, requests, failures - failures_before


def main() -> None:
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # killed: the sandbox is stopped, as on Ctrl-C
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="500,1000,1500,2000")
    parser.add_argument("--seconds", type=int, default=30)
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores; window {args.seconds} s; 25 % to the canary")
    print(f"{'offered req/s':>14} {'answered req/s':>15} {'failures':>9}")
    for rate in (float(r) for r in args.rates.split(",")):
        answered, _, failures = measure(rate, args.seconds)
        print(f"{rate:>14.0f} {answered:>15.0f} {failures:>9}")


if __name__ == "__main__":
    main()
