"""The checks' container image definition, read as Docker would: no Docker engine runs here, so the image is not
built; what can be known without building it is checked."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import click
import yaml

from canary_checks.manifests import DEMO, RUN_AS, render_all
from canary_checks.suite import locate, packaged

REPO = Path(__file__).parents[2]
DOCKERFILE = REPO / "docker" / "checks.Dockerfile"


def instructions() -> list[tuple[str, str]]:
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    return [(m.group(1).upper(), m.group(2)) for line in lines if (m := re.match(r"^([A-Z]+)\s+(.*)$", line))]


def header() -> str:
    """The comment at the top, with continuation lines joined: the commands it documents."""
    comments = [line[1:] for line in DOCKERFILE.read_text().splitlines() if line.startswith("#")]
    return "\n".join(comments).replace("\\\n", " ")


def final_stage() -> list[tuple[str, str]]:
    ops = instructions()
    last_from = max(i for i, (op, _) in enumerate(ops) if op == "FROM")
    return ops[last_from:]


def test_it_installs_the_package_with_pip_and_copies_nothing_from_a_source_tree() -> None:
    ops = instructions()
    assert not [args for op, args in ops if op in ("COPY", "ADD")], "build it from any directory: no COPY/ADD"
    assert final_stage()[0] == ("FROM", "python:3.11-slim")
    args = dict(op_args.split("=", 1) for op, op_args in ops if op == "ARG")  # type: ignore[misc]
    assert args["CANARY_CHECKS_SPEC"] == "canary-checks"
    (install,) = [a for op, a in ops if op == "RUN" and "pip install" in a]
    assert 'pip install "${CANARY_CHECKS_SPEC}"' in install
    # A wheel comes in through a named build context that replaces the empty default stage.
    assert ("FROM", "scratch AS wheels") in ops and "--mount=type=bind,from=wheels,target=/wheels" in install
    # The build fails when the release has no packaged suites: serve and gates run them by default.
    assert "import canary_checks.suites.gate, canary_checks.suites.smoke" in install
    assert dict(final_stage())["WORKDIR"] == "/checks"


def test_both_documented_builds_use_only_the_dockerfile_and_a_spec_or_a_wheel() -> None:
    builds = [shlex.split(line.strip()) for line in header().splitlines() if line.strip().startswith("docker build")]
    assert len(builds) == 2
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    for build in builds:
        assert build[build.index("-f") + 1] == "checks.Dockerfile" and build[-1] == "."
        spec = build[build.index("--build-arg") + 1]
        assert spec.startswith("CANARY_CHECKS_SPEC=")
    pypi, wheel = (b[b.index("--build-arg") + 1].split("=", 1)[1] for b in builds)
    assert pypi == f"canary-checks=={version}"  # pinned
    assert wheel == f"/wheels/canary_checks-{version}-py3-none-any.whl"
    assert builds[1][builds[1].index("--build-context") + 1] == "wheels=dist"


def test_it_runs_unprivileged_as_the_documented_uid_and_any_other() -> None:
    final = final_stage()
    ops = dict(final)
    assert ops["USER"] == f"{RUN_AS}:{RUN_AS}" == "1001:1001"
    (install,) = [a for op, a in final if op == "RUN"]
    assert f"useradd --uid {RUN_AS} --gid {RUN_AS} --home-dir /tmp" in install
    assert "UID 1001" in header() and '--user "$(id -u):$(id -g)"' in header()
    env = ops["ENV"]
    # any UID: caches under /tmp; nothing in the workspace but reports (no bytecode, no pytest cache)
    for setting in ("HOME=/tmp", "MPLCONFIGDIR=/tmp/matplotlib", "PYTHONDONTWRITEBYTECODE=1",
                    'PYTEST_ADDOPTS="-p no:cacheprovider"'):  # fmt: skip
        assert setting in env, setting
    # No config path baked in: a mounted workspace's canary.yaml is found; the Pods set CANARY_CONFIG themselves.
    assert "CANARY_CONFIG" not in env


def _containers(obj: object) -> list[dict[str, object]]:
    found = []
    if isinstance(obj, dict):
        if "containers" in obj:
            found.extend(obj["containers"])
        for value in obj.values():
            found.extend(_containers(value))
    elif isinstance(obj, list):
        for value in obj:
            found.extend(_containers(value))
    return found


def test_the_commands_the_manifests_run_exist_in_the_image_and_write_only_under_tmp() -> None:
    from canary_checks.cli import cli

    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    cmd = dict(instructions())["CMD"]
    assert cmd.startswith('["canary-checks", "serve"') and '"--reports", "/tmp/reports"' in cmd
    assert "canary-checks" in scripts
    files = render_all(DEMO)
    pods = [
        container
        for path in ("checks/webhook.yaml", "argo/analysis-template.yaml")
        for obj in yaml.safe_load_all(files[path])
        for container in _containers(obj)
        if container["image"] == DEMO.checks_image
    ]
    assert len(pods) == 2
    for container in pods:
        assert {"name": "CANARY_CONFIG", "value": "/config/canary.yaml"} in container["env"]  # type: ignore[operator]
        assert container["securityContext"]["runAsUser"] == RUN_AS  # type: ignore[index]
    commands: list[list[str]] = [c["command"] for c in pods]  # type: ignore[misc]
    assert {c[0] for c in commands} == {"canary-checks"}  # the console script
    assert {c[1] for c in commands} == {"serve", "gates"}
    # Without suites/ in their working directory (the image's /checks has none) they run the packaged suites.
    for name in ("serve", "gates"):
        command = cli.get_command(click.Context(cli), name)
        assert command is not None
        suites = [p for p in command.params if p.name and p.name.endswith("suite")]
        assert suites and all(p.default is None for p in suites), name
    assert locate("gate") == packaged("gate") or Path("suites/gate").is_dir()
    for command in commands:
        for flag in ("--reports", "--canary-reports", "--canary-evidence"):
            if flag in command:
                assert command[command.index(flag) + 1].startswith("/tmp/"), (flag, command)
