"""Traffic for the service under release.

Alone:   locust -f canary_checks/sandbox/locustfile.py --headless -u 40 -r 40 --host http://127.0.0.1:18080 ServiceUser
Sandbox: started by 'canary-checks sandbox up' at sandbox.rps requests per second (this file, from the package).
Stages:  add shapes.py beside it (locust -f .../locustfile.py,.../shapes.py ...), CANARY_STAGE=5|25|50|100.

Rate: each user sends CANARY_RPS / CANARY_USERS requests per second (default 5), so users x that is the total.

Each user is one client with its own cookies (Locust's FastHttpUser keeps a cookie jar per user), so with sticky
sessions on (routing.sticky) the router keeps it on one side. With CANARY_SIDES_FILE set, which pod answered each
user (the demo pods' x-served-by header) is written there every second as JSON: per user, runs of answers from
the same pod ``[pod, first, last, count]`` (Unix seconds at each request's start), and per second the answers of
each pod (the last 15 minutes). The sandbox sets it, to its state directory's sides.json, when sticky sessions are
on (without them every user's answers alternate: a run a request); ``Sandbox.sides()`` reads it.
"""

import itertools
import json
import os
import time
from collections import defaultdict
from typing import Any

from locust import FastHttpUser, constant_throughput, tag, task

PER_USER_RPS = float(os.environ.get("CANARY_RPS", "0") or 0) / max(1, int(os.environ.get("CANARY_USERS", "1"))) or 5.0
SIDES_FILE = os.environ.get("CANARY_SIDES_FILE", "")

_runs: dict[int, list[list[Any]]] = {}
_seconds: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
_ids = itertools.count(1)
_written = [0.0]


def _served(user: int, started: float, pod: str) -> None:
    """Record that ``pod`` answered ``user``'s request started at ``started``."""
    runs = _runs.setdefault(user, [])
    if runs and runs[-1][0] == pod:
        runs[-1][2] = started
        runs[-1][3] += 1
    else:
        runs.append([pod, started, started, 1])
    _seconds[int(started)][pod] += 1
    if time.time() - _written[0] >= 1.0:
        _write_sides()


def _write_sides() -> None:
    """The record, whole, every second at most (replaced at once: a reader never sees half of it); answers per
    second are kept for the last 15 minutes."""
    _written[0] = time.time()
    for second in [s for s in _seconds if s < _written[0] - 900]:
        del _seconds[second]
    data = {"users": {str(k): v for k, v in _runs.items()},
            "seconds": {str(k): dict(v) for k, v in _seconds.items()}}  # fmt: skip
    tmp = f"{SIDES_FILE}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, SIDES_FILE)


class ServiceUser(FastHttpUser):
    """A client of the service: reads most, writes some, all through the router's weighted split."""

    wait_time = constant_throughput(PER_USER_RPS)
    weight = 9

    def on_start(self) -> None:
        self.number = next(_ids)

    def _request(self, method: str, path: str, name: str, **kwargs: Any) -> None:
        started = time.time()
        with self.client.request(method, path, name=name, catch_response=True, **kwargs) as response:
            pod = response.headers.get("x-served-by") if response.headers else None
            if SIDES_FILE and pod:
                _served(self.number, started, pod)
            if not response.ok:
                response.failure(f"answered {response.status_code}")

    @tag("read")
    @task(8)
    def get_item(self) -> None:
        self._request("GET", "/api/items/42", "/api/items/[id]")

    @tag("write")
    @task(2)
    def post_item(self) -> None:
        self._request("POST", "/api/items", "/api/items", json={"name": "canary"})


class CanaryHeaderUser(FastHttpUser):
    """Smoke traffic sent straight to the canary through the header route (x-canary: true)."""

    wait_time = constant_throughput(PER_USER_RPS)
    weight = 1

    @task
    def get_item(self) -> None:
        with self.client.get(
            "/api/items/42", headers={"x-canary": "true"}, name="canary /api/items/[id]", catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"canary answered {response.status_code}")
