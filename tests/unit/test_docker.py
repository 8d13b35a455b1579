"""The checks' container image definition, read as Docker would: no Docker engine runs here, so the image is not
built; what can be known without building it is checked."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).parents[2]
DOCKERFILE = REPO / "docker" / "checks.Dockerfile"


def instructions() -> list[tuple[str, str]]:
    lines = DOCKERFILE.read_text().replace("\\\n", " ").splitlines()
    return [(m.group(1).upper(), m.group(2)) for line in lines if (m := re.match(r"^([A-Z]+)\s+(.*)$", line))]


def test_every_copied_path_exists_and_the_suites_are_in_the_image() -> None:
    copied = [args.split()[:-1] for op, args in instructions() if op == "COPY"]
    sources = [s for group in copied for s in group]
    assert {"pyproject.toml", "canary_checks", "suites"} <= set(sources)
    for source in sources:
        assert (REPO / source).exists(), source


def test_it_runs_unprivileged_and_writes_only_under_tmp() -> None:
    ops = dict(instructions())
    assert ops["USER"] == "1001"
    env = ops["ENV"]
    assert "CANARY_CONFIG=/config/canary.yaml" in env and "HOME=/tmp" in env and "MPLCONFIGDIR=/tmp/" in env


def test_the_commands_the_manifests_run_exist_in_the_image() -> None:
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    cmd = dict(instructions())["CMD"]
    assert cmd.startswith('["canary-checks", "serve"') and "canary-checks" in scripts
    pods = []
    for path in ("checks/webhook.yaml", "argo/analysis-template.yaml"):
        for obj in yaml.safe_load_all((REPO / "manifests" / path).read_text()):
            text = yaml.safe_dump(obj)
            if "ghcr.io/orion/canary-checks" in text:
                pods.append(obj)
    commands = [c["command"] for o in pods for c in _containers(o)]
    assert {c[0] for c in commands} == {"canary-checks"}  # the console script
    assert {c[1] for c in commands} == {"serve", "gates"}  # which run suites/gate and suites/smoke, both copied
    # everything they write is under /tmp, the one writable mount
    for command in commands:
        for flag in ("--reports", "--canary-reports", "--canary-evidence"):
            if flag in command:
                assert command[command.index(flag) + 1].startswith("/tmp/"), (flag, command)


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
