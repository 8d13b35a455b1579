"""What every command module shares: the consoles, the config of a command (found and loaded once per invocation),
the sandbox, and the suite options."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click
from rich.console import Console

if TYPE_CHECKING:
    from canary_checks.config import CanaryConfig
    from canary_checks.sandbox import Sandbox

console = Console(stderr=True)
out = Console()

FC = TypeVar("FC", bound=Callable[..., Any])


def echo(message: str) -> None:
    """A line as it is: messages carry gate summaries with brackets ("[family-wise error rate ≤ 0.05 …]") that rich
    would take for markup, and paths that must not be broken across lines."""
    out.print(message, markup=False, highlight=False, soft_wrap=True)


def load(
    ctx: click.Context,
    *,
    sandbox: bool = False,
    service: str | None = None,
    namespace: str | None = None,
    baseline: bool = False,
) -> tuple[CanaryConfig, Path | None]:
    """The config of this command. Only the sandbox's commands run without a file (on the sandbox's defaults);
    everything else judges a real service, so no canary.yaml is an error that says to run 'canary-checks init'.
    ``service`` chooses a section of a file with ``services:`` (else it renames the service, as ``namespace``
    overrides the namespace); ``baseline`` turns baseline.enabled on (--baseline)."""
    from canary_checks.config import flag_overrides, load_config

    path = config_path(ctx, sandbox=sandbox)
    obj: dict[str, Any] = ctx.ensure_object(dict)
    service = service or obj.get("service")
    configs: dict[tuple[str | None, str | None, bool], CanaryConfig] = obj.setdefault("configs", {})
    key = (service, namespace, baseline)
    if key not in configs:
        overrides = flag_overrides(service=service, namespace=namespace, baseline=baseline or None)
        configs[key] = load_config(path, overrides)
    return configs[key], path


def config_path(ctx: click.Context, *, sandbox: bool = False) -> Path | None:
    """The config file of this command (found once)."""
    from canary_checks.config import find_config, require_config

    obj: dict[str, Any] = ctx.ensure_object(dict)
    if "path" not in obj:
        explicit, search = obj.get("config_path"), (Path.cwd(),)
        obj["path"] = find_config(explicit, search=search) if sandbox else require_config(explicit, search=search)
    path: Path | None = obj["path"]
    return path


def service_configs(ctx: click.Context) -> dict[str, CanaryConfig]:
    """Every service's settings in a config with `services:` (each validated now); empty for one service."""
    from canary_checks.config import read_yaml, service_sections

    path = config_path(ctx)
    sections = service_sections(read_yaml(path), where=str(path)) if path is not None else {}
    return {name: load(ctx, service=name)[0] for name in sections}


def sandbox_of(ctx: click.Context, locustfile: Path | None = None, config: CanaryConfig | None = None) -> Sandbox:
    """The sandbox of this command's config (or of ``config``), telling its progress on stderr."""
    from canary_checks.sandbox import Sandbox

    config = config or load(ctx, sandbox=True)[0]
    return Sandbox(config, locustfile=locustfile, progress=lambda m: console.print(f"[dim]sandbox:[/] {m}"))


def suite_option(flag: str, kind: str, what: str) -> Callable[[FC], FC]:
    """A suite directory option: the team's ./suites/<kind> (canary-checks init) when there is one, else the
    packaged suite."""
    where = f"default: ./suites/{kind} if there is one, else the packaged suite"
    return click.option(flag, type=click.Path(file_okay=False, path_type=Path), default=None, help=f"{what} ({where}).")


def reports_option(**extra: Any) -> Callable[[FC], FC]:
    """``--reports``: where the runs' directories are."""
    path = click.Path(file_okay=False, path_type=Path)
    return click.option("--reports", type=path, default=Path("reports"), show_default=True, **extra)
