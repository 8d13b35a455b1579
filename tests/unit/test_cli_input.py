"""Bad input on the command line: one message naming the argument and its range, before anything is touched."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from canary_checks.cli import cli
from canary_checks.config import default_of
from canary_checks.faults import FAULT_KINDS
from tests.conftest import canary_checks, canary_checks_here, write_config


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
    assert result.exit_code == 2 and "Invalid value for '--hold-for': expected a duration" in result.output


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["gates", "--stage", "half"], "Invalid value for '--stage': expected a whole percent such as 25; got 'half'"),
        (["gates", "--stage", "30"],
         "Invalid value for '--stage': 30 is not one of the stages [5, 25, 50, 100] of cart"),
        (["run", "cart", "shop/cart:2", "--traffic-steps", "5,30,100"],
         "Invalid value for '--traffic-steps': 30 is not one of the stages [5, 25, 50, 100] of cart; leave"),
        (["run", "cart", "shop/cart:2", "--traffic-steps", "50,25"],
         "Invalid value for '--traffic-steps': stages must be strictly ascending; got [50, 25]"),
        (["run", "cart", "shop/cart:2", "--lease-ttl", "soon"], "Invalid value for '--lease-ttl': expected a duration"),
        (["replay", "export", "--start", "now", "--end", "now-1h", "out.json"], "Invalid value for '--start': "),
        (["replay", "export", "--start", "now-30s", "--end", "now-30s", "out.json"],
         "is not a --step (5s) before --end"),
        (["replay", "export", "--start", "now-1h", "--step", "10m", "out.json"],
         "Invalid value for '--step': 600s is more than half the window"),
    ],
)  # fmt: skip
def test_a_bad_stage_or_duration_is_refused_naming_its_option(tmp_path: Path, args: list[str], says: str) -> None:
    write_config(tmp_path / "canary.yaml", service="cart", namespace="shop")
    result = CliRunner().invoke(cli, ["--canary-config", str(tmp_path / "canary.yaml"), *args])
    assert result.exit_code == 2 and says in " ".join(result.output.split()), result.output


def test_run_takes_the_router_as_router_and_mesh_as_its_deprecated_name(tmp_path: Path) -> None:
    write_config(tmp_path / "canary.yaml", service="cart", namespace="shop")
    args = ("run", "cart", "shop/cart:2", "--dry-run", "--skip-validation", "--traffic-steps", "50,100")
    router = canary_checks_here(*args, "--router", "sandbox", cwd=tmp_path)
    mesh = canary_checks(*args, "--mesh", "sandbox", cwd=tmp_path)  # the notice as a user's process prints it
    assert router.returncode == mesh.returncode == 0, router.stderr + mesh.stderr
    assert "would set the canary weight to 50 %" in router.stdout and "deprecated" not in router.stderr
    assert [line for line in mesh.stderr.splitlines() if "deprecated" in line] == [
        "run: --mesh is deprecated, use --router (the traffic router; elsewhere `mesh` names the metric names)"
    ]
    assert [line for line in mesh.stdout.splitlines() if "would set" in line] == [
        line for line in router.stdout.splitlines() if "would set" in line
    ]
    both = canary_checks_here(*args, "--router", "istio", "--mesh", "sandbox", cwd=tmp_path)
    assert both.returncode == 2 and "--mesh is the old name of --router" in both.stderr


def test_help_reads_the_defaults_from_the_config_and_the_faults() -> None:
    run = " ".join(CliRunner().invoke(cli, ["run", "--help"]).output.split())
    for key in ("gates.error_rate.threshold", "gates.latency_p95.threshold", "rollout.on_undecided", "namespace"):
        value = default_of(key)
        shown = f"{value:g}" if isinstance(value, float) else str(getattr(value, "value", value))
        assert f"(default: {key} in the config; {shown})" in run, key
    assert "(default: stages in the config; 5,25,50,100)" in run and "--router [" in run and "--mesh [" not in run
    fault = CliRunner().invoke(cli, ["sandbox", "fault", "--help"]).output
    for kind, (_, _, default) in FAULT_KINDS.items():
        (line,) = [line for line in fault.splitlines() if line.strip().startswith(f"{kind} ")]
        assert line.endswith(f"(default {default:g})"), line


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
