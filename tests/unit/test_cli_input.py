"""Bad input on the command line: one message naming the argument and its range, before anything is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from canary_checks.cli import cli
from tests.conftest import write_config


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["errors", "200"], "errors takes percent of requests answered 500: from 0 to 100; got 200"),
        (["crash", "0"], "crash takes seconds after each start at which the process exits: more than 0"),
        (["cpu", "2"], "cpu takes cores kept busy (up to 1): from 0 to 1; got 2"),
    ],
)
def test_a_fault_out_of_its_range_is_refused_before_the_sandbox_is_read(args: list[str], says: str) -> None:
    result = CliRunner().invoke(cli, ["sandbox", "fault", *args])  # no sandbox runs: the value is judged first
    assert result.exit_code == 2 and f"Invalid value for VALUE: {says}" in result.output


def test_a_bad_duration_names_its_option(tmp_path: Path) -> None:
    write_config(tmp_path / "canary.yaml", service="cart", namespace="shop")
    result = CliRunner().invoke(
        cli, ["--canary-config", str(tmp_path / "canary.yaml"), "gates", "--stage", "25", "--hold-for", "5parsecs"]
    )
    assert result.exit_code == 2 and "Invalid value for --hold-for: expected a duration" in result.output


def test_init_keeps_a_repositorys_gitignore_and_adds_what_runs_write(tmp_path: Path) -> None:
    (tmp_path / ".gitignore").write_text("node_modules/\nreports")  # no newline at the end, reports already there
    from canary_checks.scaffold import init

    done = init(tmp_path, service="cart", namespace="shop", ci="none")
    assert Path(".gitignore") in done.written
    assert (tmp_path / ".gitignore").read_text() == (
        "node_modules/\nreports\n# canary-checks: what its runs write\n.canary-checks/\n.sandbox/\n"
    )
    init(tmp_path, service="cart", namespace="shop", ci="none", force=True)  # again: nothing added twice
    assert (tmp_path / ".gitignore").read_text().count(".sandbox/") == 1
