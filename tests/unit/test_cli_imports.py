"""The command stays light: `canary-checks --help` and every `canary-checks <command> --help` answer without loading
SciPy, pandas, matplotlib, the Kubernetes client, uvicorn or Locust. Without timing: bench/startup.py measures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]
HEAVY = ("scipy", "numpy", "pandas", "matplotlib", "kubernetes", "uvicorn", "locust", "gevent")
"""Imported only by the code that uses them (issue 12): each costs a tenth of a second or more to import."""


PRELUDE = f"""
import json, sys

def heavy():
    return sorted({{m.partition(".")[0] for m in sys.modules}} & set({HEAVY!r}))
"""


def _loaded_after(code: str) -> dict[str, object]:
    """Run ``code`` in a fresh interpreter (this checkout first on the path, ``heavy()`` defined); what it printed
    last, as JSON."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    script = PRELUDE + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def test_help_of_every_command_loads_no_heavy_module() -> None:
    result = _loaded_after(
        """
        import click
        from click.testing import CliRunner

        from canary_checks.cli import cli
        after_import = heavy()

        def paths(group, prefix):
            for name in group.list_commands(click.Context(group)):
                command = group.get_command(click.Context(group), name)
                yield [*prefix, name]
                if isinstance(command, click.Group):
                    yield from paths(command, [*prefix, name])

        commands = [[], *paths(cli, [])]
        failed = {}
        for words in commands:
            answer = CliRunner().invoke(cli, [*words, "--help"])
            if answer.exit_code != 0 or "Usage:" not in answer.output:
                failed[" ".join(words)] = answer.output or repr(answer.exception)
        print(json.dumps({"after_import": after_import, "after_help": heavy(), "failed": failed,
                          "commands": [" ".join(w) for w in commands]}))
        """
    )
    assert {"sandbox up", "run", "serve", "monitor", "gates", "report", "replay run", "config show"} <= set(
        result["commands"]  # type: ignore[arg-type]
    )
    assert result["failed"] == {}
    assert result["after_import"] == [], "import canary_checks.cli loads them"
    assert result["after_help"] == [], "--help loads them"


def test_the_package_and_the_cli_entry_load_no_heavy_module() -> None:
    result = _loaded_after(
        """
        import canary_checks
        package = heavy()
        from canary_checks import CanaryError, ConfigError
        errors = heavy()
        print(json.dumps({"package": package, "errors": errors}))
        """
    )
    assert result == {"package": [], "errors": []}


def test_every_public_name_resolves_from_the_package() -> None:
    import canary_checks

    for name in canary_checks.__all__:
        value = getattr(canary_checks, name)
        assert getattr(value, "__name__", name) == name, name
    assert set(canary_checks.__all__) <= set(dir(canary_checks))
    with pytest.raises(AttributeError, match="no attribute 'gate_param'"):
        canary_checks.gate_param  # noqa: B018  # a misspelling is an AttributeError, as for any module
