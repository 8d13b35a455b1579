"""A suite run forked from the warm server is, to the suite, a fresh ``python -m pytest``: the caller's working
directory (first on ``sys.path``, so a team's suite imports its own helpers), its environment as it is now, nothing
left from an earlier run, a hung check killed at the timeout — and the same with the fork server turned off."""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from canary_checks import forks
from canary_checks.forks import run_pytest

SUITE = """
import os, sys
import helpers  # beside the suite, in the working directory

LEFT = []

def test_sees_the_callers_world():
    LEFT.append(1)
    assert len(LEFT) == 1, "state left from an earlier run"
    assert os.getcwd() == {cwd!r} and sys.path[0] == {cwd!r}
    assert os.environ["TEAM_TOKEN"] == helpers.expected()
    print("checked", os.environ["TEAM_TOKEN"])
"""


@pytest.fixture(params=["forked", "new interpreter"])
def way(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each run forked from the warm server (after prepare()), or each in a new interpreter."""
    monkeypatch.setattr(forks, "_prepared", False)
    if request.param == "forked":
        forks.prepare()
    else:
        monkeypatch.setenv("CANARY_CHECKS_FORK", "0")
    return str(request.param)


def test_a_run_sees_the_callers_directory_and_environment_and_nothing_of_an_earlier_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    (tmp_path / "helpers.py").write_text("import os\ndef expected():\n    return os.environ['EXPECTED']\n")
    (tmp_path / "test_world.py").write_text(SUITE.format(cwd=str(tmp_path)))
    monkeypatch.chdir(tmp_path)
    for token in ("first", "second"):  # the environment as it is at each run
        monkeypatch.setenv("TEAM_TOKEN", token)
        monkeypatch.setenv("EXPECTED", token)
        code, output = run_pytest(["-q", "-s", "-p", "no:cacheprovider", "test_world.py"], timeout=60)
        assert code == 0, output
        assert f"checked {token}" in output and "1 passed" in output
    monkeypatch.setenv("EXPECTED", "other")
    code, output = run_pytest(["-q", "-p", "no:cacheprovider", "test_world.py"], timeout=60)
    assert code == 1 and "1 failed" in output and "AssertionError" in output


def test_a_hung_suite_is_killed_at_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str) -> None:
    marker = tmp_path / "still-running"
    (tmp_path / "test_hang.py").write_text(
        f"import time\ndef test_hang():\n    while True:\n        open({str(marker)!r}, 'w').close()\n"
        "        time.sleep(0.05)\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(subprocess.TimeoutExpired):
        run_pytest(["-q", "-p", "no:cacheprovider", "test_hang.py"], timeout=3)
    marker.unlink()
    time.sleep(0.3)  # the killed run writes no more
    assert not marker.exists()


def test_a_stopper_kills_its_suites_running_now_and_refuses_any_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, way: str
) -> None:
    marker = tmp_path / "still-running"
    (tmp_path / "test_hang.py").write_text(
        f"import time\ndef test_hang():\n    while True:\n        open({str(marker)!r}, 'w').close()\n"
        "        time.sleep(0.05)\n"
    )
    monkeypatch.chdir(tmp_path)
    stopper, raised = forks.Stopper(), []
    args = ["-q", "-p", "no:cacheprovider", "test_hang.py"]

    def caller() -> None:
        try:
            run_pytest(args, timeout=60, stopper=stopper)
        except BaseException as e:
            raised.append(e)

    thread = threading.Thread(target=caller)
    thread.start()
    deadline = time.monotonic() + 30
    while not marker.exists():  # the suite runs
        assert time.monotonic() < deadline and thread.is_alive(), raised
        time.sleep(0.05)
    assert run_pytest(["-q", "-p", "no:cacheprovider", "--collect-only", "test_hang.py"], timeout=60)[0] == 0
    assert stopper.stop() == 1  # the suite run without this stopper was not its business
    thread.join(10)
    assert not thread.is_alive() and len(raised) == 1 and isinstance(raised[0], forks.Stopped), raised
    assert "was stopped: this process is shutting down" in str(raised[0])
    marker.unlink()
    time.sleep(0.3)  # the killed run writes no more
    assert not marker.exists()
    # one about to start when the server stopped (its call admitted a moment before) is not started at all
    with pytest.raises(forks.Stopped, match="was not started: this process is shutting down"):
        run_pytest(args, timeout=60, stopper=stopper)
    assert not marker.exists() and stopper.stop() == 0


def test_a_forked_runs_output_has_no_name_on_disk_while_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's output file loses its name as soon as the child opens it: a runner killed with SIGKILL (its with
    blocks never end) leaves no canary-suite-*.out behind."""
    monkeypatch.setattr(forks, "_prepared", False)
    forks.prepare()
    private = tmp_path / "tmp"
    private.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(private))
    (tmp_path / "test_look.py").write_text(
        f"import os\ndef test_look():\n    names = [n for n in os.listdir({str(private)!r}) if 'canary-suite' in n]\n"
        "    assert names == []\n    print('no name on disk')\n"
    )
    monkeypatch.chdir(tmp_path)
    code, output = run_pytest(["-q", "-s", "-p", "no:cacheprovider", "test_look.py"], timeout=60)
    assert code == 0 and "no name on disk" in output, output
    assert [n for n in os.listdir(private) if "canary-suite" in n] == []


def test_without_a_writable_temporary_directory_a_new_interpreter_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert True\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))  # the socket and output have nowhere to go
    monkeypatch.setattr(forks, "_unforkable", False)
    monkeypatch.setattr(forks, "_prepared", True)
    code, output = forks.run_pytest(["-q", "-p", "no:cacheprovider", "test_one.py"], timeout=60)
    assert code == 0 and "1 passed" in output
    assert "running pytest in a new interpreter each time: the fork server cannot start" in caplog.text


def test_only_a_process_that_runs_several_suites_starts_the_fork_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "test_parent.py").write_text("import os\ndef test_parent():\n    print('parent', os.getppid())\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(forks, "_prepared", False)

    def parent() -> int:
        code, output = run_pytest(["-q", "-s", "-p", "no:cacheprovider", "test_parent.py"], timeout=60)
        assert code == 0, output
        return int(output.split("parent ")[1].split()[0])

    assert parent() == os.getpid()  # one run (a one-shot `canary-checks gates`): a new interpreter, no server
    forks.prepare()  # a rollout, serve, or a stage that holds
    assert parent() not in (os.getpid(), os.getppid())  # a fork of the warm server
