"""The CI examples `canary-checks init` writes into a service's repository (canary_checks/scaffold/): valid for GitHub
Actions and GitLab CI by their published schemas, and doing what a team relies on — install the tool with pip, smoke
then the stage's gates, JUnit published even when a check fails — with nothing of this repository's demo in them."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).parents[2]
SCAFFOLD = REPO / "canary_checks" / "scaffold"
GITHUB = SCAFFOLD / "github-actions.yml"
GITLAB = SCAFFOLD / "gitlab-ci.yml"
SCHEMAS = {GITHUB.name: "vendor.github-workflows", GITLAB.name: "vendor.gitlab-ci"}
"""check-jsonschema's copies of the schemas GitHub and GitLab publish (schemastore.org), by file name."""
INSTALL = 'pip install "${CANARY_CHECKS_SPEC:-canary-checks}"'


def load(path: Path, service: str | None = None) -> dict[str, Any]:
    text = path.read_text()
    if service is not None:
        text = text.replace("SERVICE_NAME", service)  # what `canary-checks init --service` does
    return yaml.safe_load(text)  # type: ignore[no-any-return]


def github_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    (job,) = workflow["jobs"].values()
    return job["steps"]  # type: ignore[no-any-return]


def commands(path: Path) -> list[str]:
    """The shell commands the example runs, in order."""
    if path == GITHUB:
        return [s["run"].strip() for s in github_steps(load(GITHUB)) if "run" in s]
    (job,) = [v for k, v in load(GITLAB).items() if isinstance(v, dict) and "script" in v]
    return [line.strip() for line in job["script"]]


def pytest_runs(path: Path) -> list[list[str]]:
    return [shlex.split(c) for c in commands(path) if c.startswith("pytest ")]


def check_schema(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", SCHEMAS[path.name], str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=lambda p: p.name)
def test_each_example_is_valid_by_its_ci_systems_schema(path: Path, tmp_path: Path) -> None:
    done = check_schema(path)
    assert done.returncode == 0, done.stdout + done.stderr
    # and once init has put the service in
    filled = tmp_path / path.name
    filled.write_text(path.read_text().replace("SERVICE_NAME", "cart"))
    assert check_schema(filled).returncode == 0


def test_the_schema_check_rejects_a_misspelt_key(tmp_path: Path) -> None:
    bad = tmp_path / GITLAB.name
    bad.write_text(GITLAB.read_text().replace("    when: always", "    whenn: always"))
    done = check_schema(bad)
    assert done.returncode != 0 and "whenn" in done.stdout


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=lambda p: p.name)
def test_it_installs_with_pip_then_runs_smoke_then_the_stages_gates(path: Path) -> None:
    run = commands(path)
    assert run.index(INSTALL) < min(i for i, c in enumerate(run) if c.startswith("pytest "))
    smoke, gates = pytest_runs(path)
    assert smoke[:2] == ["pytest", "suites/smoke"] and gates[:2] == ["pytest", "suites/gate"]
    assert smoke[smoke.index("--junitxml") + 1] == "reports/smoke.xml"
    assert gates[gates.index("--junitxml") + 1] == "reports/gates.xml"
    assert gates[gates.index("--stage") + 1] == "$STAGE"  # shlex has taken the quotes off "$STAGE"
    assert gates[gates.index("--hold-for") + 1] == "5m"
    for run_args in (smoke, gates):
        assert run_args[run_args.index("--service") + 1] == "$SERVICE"


def test_every_pytest_flag_they_pass_is_an_option_of_the_plugin(pytestconfig: pytest.Config) -> None:
    pending = {"--hold-for"}  # the plugin's in-session hold, added by the same issue (part: suites in the package)
    for path in (GITHUB, GITLAB):
        for run_args in pytest_runs(path):
            for word in run_args:
                if not word.startswith("--") or word == "--junitxml":
                    continue
                known = pytestconfig.getoption(word.lstrip("-").replace("-", "_"), default="absent") != "absent"
                assert known or word in pending, (path.name, word)


def test_github_runs_on_the_runner_by_hand_for_a_stage_and_publishes_junit_even_on_failure() -> None:
    workflow = load(GITHUB)
    trigger = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as true
    assert set(trigger) == {"workflow_dispatch"}
    assert trigger["workflow_dispatch"]["inputs"]["stage"]["default"] == "25"
    (job,) = workflow["jobs"].values()
    assert "container" not in job and "services" not in job, "runner-hosted: no image needed"
    assert job["env"]["STAGE"] == "${{ inputs.stage }}"
    assert job["env"]["SERVICE"] == "${{ vars.CANARY_SERVICE || 'SERVICE_NAME' }}"
    assert job["env"]["CANARY_CHECKS_SPEC"] == "${{ vars.CANARY_CHECKS_SPEC }}"
    assert job["env"]["PROMETHEUS_TOKEN"] == "${{ secrets.PROMETHEUS_TOKEN }}"
    steps = github_steps(workflow)
    python = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert tuple(int(p) for p in python["with"]["python-version"].split(".")) >= (3, 11)
    uploads = [s for s in steps if s.get("uses", "").startswith("actions/upload-artifact@")]
    reporter_actions = ("mikepenz/action-junit-report@", "dorny/test-reporter@")
    reporters = [s for s in steps if s.get("uses", "").startswith(reporter_actions)]
    assert len(uploads) == len(reporters) == 1
    (upload,), (reporter,) = uploads, reporters
    last_check = max(i for i, s in enumerate(steps) if s.get("run", "").startswith("pytest "))
    for step in (upload, reporter):
        assert step["if"] == "always()", step["name"]  # after a failing check too
        assert steps.index(step) > last_check
    assert upload["with"]["path"] == "reports/"
    assert all(fnmatch.fnmatch(f, reporter["with"]["report_paths"]) for f in ("reports/smoke.xml", "reports/gates.xml"))
    # The reporter uses the job's own token; the only secrets are the Prometheus token and the optional kubeconfig.
    assert "token" not in reporter["with"] and workflow["permissions"]["checks"] == "write"
    assert set(re.findall(r"secrets\.(\w+)", GITHUB.read_text())) == {"PROMETHEUS_TOKEN", "CANARY_KUBECONFIG"}


def test_gitlab_runs_by_hand_for_a_stage_and_publishes_junit_even_on_failure() -> None:
    config = load(GITLAB)
    variables = config["variables"]
    assert variables["STAGE"]["value"] == "25" and variables["STAGE"]["description"]
    assert variables["SERVICE"]["value"] == "SERVICE_NAME"
    assert variables["CANARY_CHECKS_SPEC"]["value"] == ""
    assert "PROMETHEUS_TOKEN" not in variables, "a masked project variable, never in the file"
    job = config["canary"]
    (rule,) = job["rules"]
    assert set(re.findall(r'\$CI_PIPELINE_SOURCE == "(\w+)"', rule["if"])) == {"web", "api", "trigger"}
    artifacts = job["artifacts"]
    assert artifacts["when"] == "always"
    assert artifacts["reports"]["junit"] == ["reports/smoke.xml", "reports/gates.xml"]
    assert "reports/" in artifacts["paths"]
    image, version = job["image"].split(":")
    assert image == "python" and version.endswith("-slim"), "the official Python image, none of ours"
    assert tuple(int(p) for p in version.removesuffix("-slim").split(".")) >= (3, 11)


@pytest.mark.parametrize("path", [GITHUB, GITLAB], ids=lambda p: p.name)
def test_nothing_of_the_demo_and_the_service_is_the_one_init_writes(path: Path) -> None:
    text = path.read_text()
    assert not re.search(r"orion|\bauth\b|ghcr\.io|/checks\b|canary-checks:", text, re.IGNORECASE)
    assert "SERVICE_NAME" in text
    filled = path.read_text().replace("SERVICE_NAME", "cart")
    assert "SERVICE_NAME" not in filled and yaml.safe_load(filled)
    if path == GITHUB:
        (job,) = load(GITHUB, "cart")["jobs"].values()
        assert job["env"]["SERVICE"] == "${{ vars.CANARY_SERVICE || 'cart' }}"
    else:
        assert load(GITLAB, "cart")["variables"]["SERVICE"]["value"] == "cart"
        assert load(GITLAB, "cart")["canary"]["resource_group"] == "canary-cart"


def test_the_examples_ship_in_the_wheel() -> None:
    package_data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = [
        p for p in (REPO / "canary_checks").rglob("*")
        if any(fnmatch.fnmatch(str(p.relative_to(REPO / "canary_checks")), g) for g in package_data["canary_checks"])
    ]  # fmt: skip
    assert {GITHUB, GITLAB} <= set(shipped)
