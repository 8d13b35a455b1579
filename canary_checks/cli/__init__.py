"""The ``canary-checks`` command. It parses and delegates; every option is also settable as CANARY_<OPTION>.

One module a group of commands: ``rollout`` (run), ``gates`` (gates, report), ``sandbox`` (sandbox, demo),
``project`` (init, config, manifests), ``observe`` (monitor, watch, replay), ``serve``; ``types`` holds the
parameter types (durations, stages, sizes, instants) and the options whose help reads the config's defaults,
``common`` the consoles and the config of a command.

It stays light: at module level only click, rich's console and the errors are imported, so ``--help`` answers in a
blink; each command imports what it uses (the config's pydantic models, the Prometheus client, the sandbox, SciPy
through the comparisons, the Kubernetes client) when it runs. tests/unit/test_cli_imports.py keeps it so.
"""

from __future__ import annotations

import logging
import sys

import click
from rich.markup import escape

from canary_checks.cli.common import console
from canary_checks.cli.gates import gates_command, report_command
from canary_checks.cli.observe import monitor_command, replay, watch_command
from canary_checks.cli.project import config_group, init_command, manifests
from canary_checks.cli.rollout import run
from canary_checks.cli.sandbox import demo, sandbox
from canary_checks.cli.serve import serve_command
from canary_checks.errors import CanaryError, ConfigError

__all__ = ["cli", "main"]


@click.group(context_settings={"auto_envvar_prefix": "CANARY", "help_option_names": ["-h", "--help"]})
@click.option(
    "--canary-config",
    "config_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Config file (default: ./canary.yaml; env CANARY_CONFIG).",
)
@click.option(
    "--service",
    "service",
    default=None,
    help="With `services:` in the config: the service of every command that names none itself (the sandbox, "
    "watch, replay); env CANARY_SERVICE.",
)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens (to stderr).")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, service: str | None, verbose: bool) -> None:
    """Canary-release verification: gates over live Prometheus metrics, run as pytest.

    \b
    In a service:     canary-checks init --service S --namespace N --prometheus-url U
    The gates:        pytest suites/gate --stage 25   (or: pytest --pyargs canary_checks.suites.gate)
    Smoke checks:     pytest suites/smoke [--target stable]
    Local sandbox:    canary-checks sandbox up | status | fault | weight | down
    The whole tour:   canary-checks demo
    Watch it:         canary-checks monitor auth
    Runs' reports:    canary-checks report [RUN_ID]
    Flagger, Argo:    canary-checks serve | canary-checks gates --stage N
    A dead runner:    canary-checks watch
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    ctx.ensure_object(dict).update(config_path=config_path, service=service)


for command in (sandbox, init_command, config_group, run, replay, manifests, monitor_command, gates_command,
                watch_command, serve_command, report_command, demo):  # fmt: skip
    cli.add_command(command)


def main() -> None:
    try:
        cli(standalone_mode=False)
    except click.exceptions.Abort:
        console.print("aborted")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except ConfigError as e:
        console.print(f"[red]error:[/] {escape(e.message)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except CanaryError as e:
        console.print(f"[red]error:[/] {escape(e.message)}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
