"""A new user, outside this checkout: the built wheel installed into a fresh virtualenv in a temporary directory,
`canary-checks init` in a service's repository, then the smoke and gate suites against the live sandbox — the
README's "Using it in your service" steps, run as the commands of the CI example `init` wrote."""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import SUITE_PLUGINS_ONLY
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
    # --no-compile: the same files installed, byte-compiled as they are imported (90 s → 35 s here, most of it SciPy's)
    installed = run([root / "venv" / "bin" / "python", "-m", "pip", "install", "-q", "--no-compile", wheel], cwd=root,
                    timeout=900)  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]
    return root / "venv"


@pytest.fixture
def service_repo(tmp_path: Path, venv: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    repo = tmp_path / "auth-service"
    repo.mkdir()
    dropped = ("PYTHONPATH", "CANARY_CONFIG", "VIRTUAL_ENV", *SUITE_PLUGINS_ONLY)  # the entry point loads the plugin
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    yield repo, env


@pytest.mark.long  # half a minute or more: workers start it early
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
                 "suites/smoke/test_smoke.py", ".github/workflows/canary.yml"):  # fmt: skip
        assert (repo / path).is_file(), (path, init.stdout)
    assert {"reports/", ".canary-checks/", ".sandbox/"} <= set((repo / ".gitignore").read_text().splitlines())
    again = run(["canary-checks", "init", "--service", "auth"], cwd=repo, env=env)
    assert again.returncode == 2 and "--force" in again.stderr
    # what a team edits for this Prometheus: the sandbox scrapes every second, so a short window is enough;
    # it has no Kubernetes API
    text = (repo / "canary.yaml").read_text()
    assert "window: 1m\n" in text and "  enabled: null\n" in text
    (repo / "canary.yaml").write_text(text.replace("window: 1m\n", "window: 10s\n").replace(
        "  enabled: null\n", "  enabled: false\n", 1))  # fmt: skip
    assert yaml.safe_load((repo / "canary.yaml").read_text())["kubernetes"]["enabled"] is False

    # the CI example's own steps, as its runner would run them
    workflow = yaml.safe_load((repo / ".github" / "workflows" / "canary.yml").read_text())
    steps = [step["run"] for step in workflow["jobs"]["canary"]["steps"] if "pytest" in step.get("run", "")]
    assert [s.split()[1] for s in steps] == ["suites/smoke", "suites/gate"], steps
    # the job's env: the service and the stage; the hold looks again every 2 s here instead of 15
    ci_env = {**env, "SERVICE": "auth", "STAGE": "25", "PYTEST_ADDOPTS": "--hold-interval 2s"}

    live.settle()
    smoke = run(["bash", "-eo", "pipefail", "-c", steps[0]], cwd=repo, env=ci_env)
    assert smoke.returncode == 0, smoke.stdout[-3000:]
    gates = run(["bash", "-eo", "pipefail", "-c", steps[1]], cwd=repo, env=ci_env)
    assert gates.returncode == 0, gates.stdout[-4000:]
    cases = list(ET.parse(repo / "reports" / "gates.xml").getroot().iter("testcase"))
    assert len(cases) >= 15
    assert not [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    for case in cases:
        props = {p.get("name"): p.get("value") for p in case.iter("property")}
        healthy = ("pass", "inconclusive")  # a healthy canary: passed, or still undecided
        if props["gate"].startswith("compare_") and props["severity"] != "critical":
            # a warning comparison may read a healthy canary as worse — the family of them at most 1 − confidence
            # (5 %) of stages, by design (Holm, anytime-valid) — and is reported without failing the job
            healthy += ("fail",)
        assert props["verdict"] in healthy, props
        if props["verdict"] == "inconclusive" and props["severity"] == "critical":  # --hold-for ran out first:
            assert props["decision"] == "undecided" and case.find("skipped") is not None  # apart, not failed
    assert "canary gates" in gates.stdout
    assert (repo / "reports" / "smoke.xml").is_file()

    # a single look without the hold, as a person runs it by hand: exit 0 too, undecided checks listed apart
    once = run(["pytest", "suites/gate", "--stage", "25"], cwd=repo, env=env)
    assert once.returncode == 0, once.stdout[-3000:]

    live.set_faults("canary", {"errors": 20})
    try:
        live.settle()
        failing = run(["bash", "-eo", "pipefail", "-c", steps[1].replace("gates.xml", "failing.xml")], cwd=repo,
                      env=ci_env)  # fmt: skip
    finally:
        live.set_faults("canary", {})
    assert failing.returncode == 1, failing.stdout[-3000:]
    assert "error_rate: FAIL (critical)" in failing.stdout
    assert "canary-checks: holding" not in failing.stdout  # a decided failure does not wait
    failed = {c.get("name") for c in ET.parse(repo / "reports" / "failing.xml").getroot().iter("testcase")
              if c.find("failure") is not None}  # fmt: skip
    assert "test_error_rate[error_rate]" in failed
