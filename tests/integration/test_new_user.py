"""A new user, outside this checkout: the built wheel installed into a fresh virtualenv in a temporary directory,
`canary-checks init` in a service's repository, then the smoke and gate suites against the live sandbox — the
README's "Using it in your service" steps, which are the CI example's steps."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import Live

REPO = Path(__file__).parents[2]


def run(cmd: list[str | Path], cwd: Path, env: dict[str, str] | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)  # fmt: skip


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``pip install`` of the wheel built from this checkout into a virtualenv that has never seen it."""
    root = tmp_path_factory.mktemp("new-user")
    built = run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", root / "dist", REPO], cwd=root)
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (root / "dist").glob("canary_checks-*.whl")
    base = getattr(sys, "_base_executable", sys.executable)
    made = run([base, "-m", "venv", root / "venv"], cwd=root)
    assert made.returncode == 0, made.stderr
    installed = run([root / "venv" / "bin" / "python", "-m", "pip", "install", "-q", wheel], cwd=root, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    return root / "venv"


@pytest.fixture
def service_repo(tmp_path: Path, venv: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    repo = tmp_path / "auth-service"
    repo.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CANARY_CONFIG", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    yield repo, env


def test_init_then_smoke_then_gates_from_a_service_repository(live: Live, service_repo: tuple[Path, dict[str, str]],
                                                             venv: Path) -> None:  # fmt: skip
    repo, env = service_repo
    where = run(["python", "-c", "import canary_checks; print(canary_checks.__file__)"], cwd=repo, env=env)
    assert where.stdout.startswith(str(venv)), where  # the installed wheel, not this checkout

    # no canary.yaml yet: one clear error naming init
    bare = run(["pytest", "--pyargs", "canary_checks.suites.gate", "--stage", "25"], cwd=repo, env=env)
    assert bare.returncode == 4 and "canary-checks init" in bare.stderr and "Traceback" not in bare.stderr

    init = run(["canary-checks", "init", "--service", "auth", "--namespace", "orion", "--prometheus-url",
                live.box.prometheus_url, "--url", live.box.service_url], cwd=repo, env=env)  # fmt: skip
    assert init.returncode == 0, init.stderr
    for path in ("canary.yaml", "conftest.py", "suites/gate/test_gates.py", "suites/gate/test_compare.py",
                 "suites/smoke/test_smoke.py", ".github/workflows/canary-checks.yml"):  # fmt: skip
        assert (repo / path).is_file(), (path, init.stdout)
    again = run(["canary-checks", "init", "--service", "auth"], cwd=repo, env=env)
    assert again.returncode == 2 and "--force" in again.stderr
    # what a team edits for this Prometheus: the sandbox scrapes every second, so a short window is enough;
    # it has no Kubernetes API
    text = (repo / "canary.yaml").read_text()
    assert "window: 1m\n" in text and "  enabled: null\n" in text
    (repo / "canary.yaml").write_text(text.replace("window: 1m\n", "window: 10s\n").replace(
        "  enabled: null\n", "  enabled: false\n", 1))  # fmt: skip
    assert yaml.safe_load((repo / "canary.yaml").read_text())["kubernetes"]["enabled"] is False

    live.box.set_faults("canary", {})
    smoke = run(["pytest", "suites/smoke", "--junitxml", "reports/smoke.xml"], cwd=repo, env=env)
    assert smoke.returncode == 0, smoke.stdout[-3000:]
    gates = run(["pytest", "suites/gate", "--stage", "25", "--junitxml", "reports/gates.xml"], cwd=repo, env=env)
    assert gates.returncode == 0, gates.stdout[-4000:]
    cases = list(ET.parse(repo / "reports" / "gates.xml").getroot().iter("testcase"))
    assert len(cases) >= 15
    assert not [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        assert props["verdict"] in ("pass", "inconclusive"), props  # a healthy canary: passed, or undecided
        if props["verdict"] == "inconclusive":
            assert props["decision"] == "undecided" and case.find("skipped") is not None
    assert "canary gates" in gates.stdout

    live.box.set_faults("canary", {"errors": 20})
    try:
        live.settle()
        failing = run(["pytest", "suites/gate", "--stage", "25", "--junitxml", "reports/failing.xml"], cwd=repo,
                      env=env)  # fmt: skip
    finally:
        live.box.set_faults("canary", {})
    assert failing.returncode == 1, failing.stdout[-3000:]
    assert "error_rate: FAIL (critical)" in failing.stdout
    failed = {c.get("name") for c in ET.parse(repo / "reports" / "failing.xml").getroot().iter("testcase")
              if c.find("failure") is not None}  # fmt: skip
    assert "test_error_rate[error_rate]" in failed
