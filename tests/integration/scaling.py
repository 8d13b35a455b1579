"""The scaling sandbox of the capacity tests: four stable pods, a canary whose pods (processes run by the node agent,
each an HAProxy server) follow its weight (rollout.scaling proportional, sandbox.stable_replicas 4). Each test module
that uses the `box` fixture starts one of its own, on the worker that runs it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canary_checks.config import load_config
from canary_checks.sandbox import Sandbox
from tests.conftest import write_config
from tests.integration.conftest import sandbox_settings

WINDOW = 10
STABLE = 4


@pytest.fixture(scope="module")
def box(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    root = tmp_path_factory.mktemp("scaling")
    settings = sandbox_settings(root / "state")
    path = write_config(root / "canary.yaml", service="auth", namespace="orion", window=f"{WINDOW}s", min_requests=20,
                        stages=[5, 25, 50, 75, 100], kubernetes={"enabled": False},
                        statistics={"sample_interval": "2s", "worse_delta": 2},
                        prometheus={"url": f"http://127.0.0.1:{settings['prometheus_port']}"},
                        rollout={"scaling": {"mode": "proportional"}},
                        sandbox={**settings, "stable_replicas": STABLE})  # fmt: skip
    sandbox = Sandbox(load_config(path))
    sandbox.up(weight=0)
    try:
        sandbox.wait_ready(60)
        sandbox.wait_for_data()
        yield sandbox
    finally:
        sandbox.down()


def config_path(box: Sandbox) -> Path:
    return box.state_dir.parent / "canary.yaml"


def canary_pods(box: Sandbox) -> list[dict[str, Any]]:
    return [p for p in box.pods() if p["workload"] == "auth-canary"]


def wait_until(what: str, done: Any, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
