"""A suite run forked from the warm server is, to the suite, a fresh ``python -m pytest``: the caller's working
directory (first on ``sys.path``, so a team's suite imports its own helpers), its environment as it is now, nothing
left from an earlier run, a hung check killed at the timeout — and the same with the fork server turned off."""

from __future__ import annotations

import subprocess
import tempfile
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


@pytest.mark.parametrize("fork", ["1", "0"])
def test_a_run_sees_the_callers_directory_and_environment_and_nothing_of_an_earlier_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fork: str
) -> None:
    (tmp_path / "helpers.py").write_text("import os\ndef expected():\n    return os.environ['EXPECTED']\n")
    (tmp_path / "test_world.py").write_text(SUITE.format(cwd=str(tmp_path)))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CANARY_CHECKS_FORK", fork)
    for token in ("first", "second"):  # the environment as it is at each run
        monkeypatch.setenv("TEAM_TOKEN", token)
        monkeypatch.setenv("EXPECTED", token)
        code, output = run_pytest(["-q", "-s", "-p", "no:cacheprovider", "test_world.py"], timeout=60)
        assert code == 0, output
        assert f"checked {token}" in output and "1 passed" in output
    monkeypatch.setenv("EXPECTED", "other")
    code, output = run_pytest(["-q", "-p", "no:cacheprovider", "test_world.py"], timeout=60)
    assert code == 1 and "1 failed" in output and "AssertionError" in output


def test_a_hung_suite_is_killed_at_the_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
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


def test_without_a_writable_temporary_directory_a_new_interpreter_runs_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "test_one.py").write_text("def test_one():\n    assert True\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "gone"))  # the socket and output have nowhere to go
    monkeypatch.setattr(forks, "_unforkable", False)
    code, output = forks.run_pytest(["-q", "-p", "no:cacheprovider", "test_one.py"], timeout=60)
    assert code == 0 and "1 passed" in output
    assert "running pytest in a new interpreter each time: the fork server cannot start" in caplog.text
