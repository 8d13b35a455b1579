"""The canary-checks command as a user runs it: clear errors, no tracebacks, nothing started on bad input."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import pytest

from tests.conftest import canary_checks, write_config
from tests.integration.conftest import REPO, sandbox_settings


def test_help_explains_the_commands(tmp_path: Path) -> None:
    done = canary_checks("--help", cwd=tmp_path)
    assert done.returncode == 0
    for word in ("sandbox", "demo", "pytest suites/gate --stage 25"):
        assert word in done.stdout
    fault = canary_checks("sandbox", "fault", "--help", cwd=tmp_path)
    assert "latency N   add N ms to every request" in fault.stdout


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gates:\n  error_rate: {threshold: [5]}\n", "gates.error_rate.threshold: expected a number (got [5])"),
        ("service: 'auth\"} or vector(1)'\n", "service: 'auth\"} or vector(1)' is not a valid Kubernetes name"),
        ("sandbox: {rps: -3}\n", "sandbox.rps: expected requests per second > 0 and ≤ 20000; got -3"),
    ],
)
def test_a_bad_config_is_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    (tmp_path / "canary.yaml").write_text(text)
    done = canary_checks("sandbox", "up", cwd=tmp_path)
    assert done.returncode == 2
    assert f"error: {tmp_path / 'canary.yaml'}: {expected}" in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / ".sandbox").exists(), "nothing may start on a bad config"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("monitor", "Bad_Name", "--duration", "1s"), "error: command line (--service): service: 'Bad_Name' is not"),
        (("monitor", "--duration", "1x"), "Invalid value for '--duration': expected a duration such as 30s"),
        (("monitor", "--stage", "30"), "Invalid value for '--stage': 30 is not one of the stages [5, 25, 50, 100]"),
        (("gates", "--stage", "30"), "Invalid value for '--stage': 30 is not one of the stages [5, 25, 50, 100]"),
        (("serve",), "error: $CANARY_WEBHOOK_TOKEN: no webhook token: every call must be authenticated"),
        (("report", "nope", "--reports", "tests"), "error: tests: no run 'nope' in tests"),
    ],
)
def test_bad_input_to_the_new_commands_is_one_clear_error(args: tuple[str, ...], expected: str) -> None:
    done = canary_checks(*args, cwd=REPO, env={"CANARY_WEBHOOK_TOKEN": ""})  # the repo: its suites/ and canary.yaml
    assert done.returncode in (1, 2)
    assert expected in done.stderr
    assert "Traceback" not in done.stderr


def test_a_taken_port_is_named_with_the_key_to_change(tmp_path: Path) -> None:
    settings = sandbox_settings(tmp_path / "state")
    write_config(tmp_path / "canary.yaml", sandbox=settings)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", int(str(settings["router_port"]))))
        taken.listen()
        done = canary_checks("sandbox", "up", cwd=tmp_path)  # the packaged locustfile, from any directory
    assert done.returncode == 1
    assert f"port {settings['router_port']} on 127.0.0.1 (for the HAProxy front end) is already in use" in done.stderr
    assert "sandbox.router_port" in done.stderr
    assert not (tmp_path / "state" / "state.json").exists()


def test_a_missing_binary_says_how_to_install_it(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    prometheus = shutil.which("prometheus")
    assert prometheus, "the test command installs prometheus"
    (bin_dir / "prometheus").symlink_to(prometheus)
    write_config(tmp_path / "canary.yaml", sandbox=sandbox_settings(tmp_path / "state"))
    done = canary_checks("sandbox", "up", cwd=tmp_path, env={"PATH": str(bin_dir)})
    assert done.returncode == 1
    assert "'haproxy' is not installed" in done.stderr
    assert "apt-get install -y haproxy" in done.stderr


def test_status_and_faults_when_nothing_runs(tmp_path: Path) -> None:
    write_config(tmp_path / "canary.yaml", sandbox=sandbox_settings(tmp_path / "state"))
    status = canary_checks("sandbox", "status", cwd=tmp_path)
    assert status.returncode == 3
    assert "stopped" in status.stdout
    fault = canary_checks("sandbox", "fault", "errors", "20", cwd=tmp_path)
    assert fault.returncode == 1
    assert "does not answer" in fault.stderr and "canary-checks sandbox up" in fault.stderr
    assert "Traceback" not in fault.stderr
    down = canary_checks("sandbox", "down", cwd=tmp_path)
    assert down.returncode == 0 and "nothing was running" in down.stdout
