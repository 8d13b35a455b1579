"""``canary-checks init``, ``canary-checks config`` (show, reference) and ``canary-checks manifests render``: what a
service's repository and cluster are set up with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from canary_checks.cli.common import echo, load


@click.command("init")
@click.option(
    "--service", default=None,
    help="The service under release (default: this directory's name). Where canary.yaml describes other services, "
    "it is added to them: a section of `services:`.",
)  # fmt: skip
@click.option("--namespace", default=None, help="Its Kubernetes namespace (default: default).")
@click.option(
    "--mesh", type=click.Choice(["istio", "linkerd"]), default=None,
    help="Which metric names its Prometheus has (default: istio).",
)  # fmt: skip
@click.option(
    "--prometheus-url", default=None,
    help="Prometheus (or Thanos/Mimir query frontend) base URL (default: http://prometheus.monitoring.svc:9090).",
)  # fmt: skip
@click.option(
    "--url", default=None,
    help="The service's address through the mesh, for the smoke suite (default: http://SERVICE.NAMESPACE.svc."
    "cluster.local).",
)  # fmt: skip
@click.option(
    "--ci", type=click.Choice(["github", "gitlab", "none"]), default="github", show_default=True,
    help="Which CI example to write: .github/workflows/canary.yml, or ci/canary.gitlab-ci.yml for your "
    ".gitlab-ci.yml to include.",
)  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite files that exist.")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
def init_command(
    service: str | None,
    namespace: str | None,
    mesh: str | None,
    prometheus_url: str | None,
    url: str | None,
    ci: str,
    force: bool,
    directory: Path,
) -> None:
    """Set up a service's repository (DIRECTORY, default here) for canary checks.

    \b
    Writes canary.yaml (every setting with its default and meaning), suites/gate/ and suites/smoke/ (the
    packaged suites, to extend), conftest.py (your own fixtures) and a CI example; refuses to overwrite
    without --force. Then: pytest suites/smoke, and pytest suites/gate --stage 5.

    \b
    With a canary.yaml there already, --service S adds S to it (several services in one file): a section
    services.S with what differs for S (--namespace, --mesh, --prometheus-url, --url); every other setting is
    shared. Each command then takes --service to choose one.
    """
    from canary_checks.scaffold import init

    done = init(directory, service=service, namespace=namespace, mesh=mesh, prometheus_url=prometheus_url, url=url,
                ci=ci, force=force)  # fmt: skip
    c = done.config
    if done.added:
        echo(f"added services.{c.service} to {directory / 'canary.yaml'} (namespace {c.namespace}, {c.mesh.value}, "
              f"smoke.url {c.smoke.url}); every other setting is shared")  # fmt: skip
        echo(f"next:\n  1. canary-checks config show --service {c.service}   # what is in force for it\n"
              f"  2. pytest suites/smoke --service {c.service}\n"
              f"  3. pytest suites/gate --stage {c.stages[0]} --service {c.service}")  # fmt: skip
        return
    echo(f"wrote into {directory}/ for {c.service} in namespace {c.namespace} ({c.mesh.value}):")
    for path in done.written:
        echo(f"  {path}")
    steps = [
        f"check canary.yaml: Prometheus {c.prometheus.shown_url} (a token: prometheus.bearer_token_env), smoke.url "
        f"{c.smoke.url}, the workloads {c.workload('stable')} and {c.workload('canary')}",
        "pytest suites/smoke                      # the canary through its x-canary: true route",
        "pytest suites/gate --stage 5             # the first stage's gates (--hold-for 5m waits for a decision)",
    ]
    if done.ci is not None and done.ci.name.endswith("gitlab-ci.yml"):
        steps.append(f"include {done.ci} from .gitlab-ci.yml (include: {{local: {done.ci}}}); set PROMETHEUS_TOKEN "
                     "in its CI/CD variables if Prometheus needs one")  # fmt: skip
    elif done.ci is not None:
        steps.append(f"commit {done.ci} and set its PROMETHEUS_TOKEN secret if Prometheus needs one")
    echo("next:\n" + "\n".join(f"  {n}. {step}" for n, step in enumerate(steps, 1)))


@click.group("config")
def config_group() -> None:
    """The configuration: what is in force, and every key."""


@config_group.command("show")
@click.option("--service", default=None, help="With `services:` in the config: the service whose settings to show.")
@click.pass_context
def config_show(ctx: click.Context, service: str | None) -> None:
    """Print the configuration in force (the file merged over the defaults) as YAML.

    With `services:` in the config, it is the shared settings with the service's section merged over them; the
    keys the section sets are listed first. Every service's section is checked (a CI lint of the file); the
    other commands check only the service they act on, so one team's mistake never blocks another's rollback.
    """
    import yaml

    from canary_checks.config import SERVICES_KEY, read_yaml, service_sections

    config, path = load(ctx, sandbox=True, service=service)
    if path is not None:  # the file's check: every service's section, not only the one shown
        from canary_checks.config import config_from

        config_from(read_yaml(path), where=str(path), service=config.service, every_service=True)
    click.echo(f"# {path or 'built-in defaults (no canary.yaml found)'}")
    from canary_checks.errors import redact_url

    sections = service_sections(read_yaml(path)) if path is not None else {}
    if sections:
        own = _leaf_keys(sections[config.service])
        click.echo(f"# service {config.service}, one of {', '.join(sections)} (--service chooses)")
        click.echo(f"# from {SERVICES_KEY}.{config.service}: {', '.join(own) or 'nothing (every setting is shared)'}")
        click.echo("# everything else: the shared (top-level) settings, then the built-in defaults")
    click.echo(redact_url(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)), nl=False)


def _leaf_keys(section: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys a raw section sets (a list or a scalar is one key; a mapping, each of its keys)."""
    keys: list[str] = []
    for key, value in section.items():
        name = f"{prefix}{key}"
        keys += _leaf_keys(value, f"{name}.") if isinstance(value, dict) and value else [name]
    return keys


@config_group.command("reference")
def config_reference() -> None:
    """Print every configuration key with its default and meaning (docs/configuration.md)."""
    from canary_checks.config import reference_markdown

    click.echo(reference_markdown(), nl=False)


@click.group()
def manifests() -> None:
    """Kubernetes manifests and Prometheus alert rules for your services."""


def _service_image(value: str) -> tuple[str, str]:
    name, sep, image = value.partition("=")
    if not sep or not name or not image:
        raise click.BadParameter(f"expected NAME=IMAGE such as cart=registry.example/cart:1.2; got {value!r}")
    return name.strip(), image.strip()


def _values_keys() -> str:
    """Every key of the values file, as the help's last block."""
    import textwrap

    from canary_checks.manifests import values_reference

    lines = ["\b", "Every key of the values file (default):"]
    for key, default, meaning in values_reference():
        lines.append(f"  {key} ({default})")
        lines.extend(textwrap.wrap(meaning, 100, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)


_VALUES_EXAMPLE = """\b
    namespace: shop                          # where everything goes
    checks_image: registry.example/canary-checks:0.1.0   # docker/checks.Dockerfile, pushed
    services:
      - name: cart
        image: registry.example/cart:1.2     # the stable Deployment's image
        port: 8080                           # optional, with the keys below
        cpu_limit: "1"
        memory_limit: 512Mi
"""


class _ValuesHelp(click.Command):
    """``--help`` ends with every key of the values file, read from the models only when help is asked for (the
    models load pydantic: the rest of the CLI's help stays fast)."""

    keys_added = False

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        if self.help is not None and not self.keys_added:
            self.help, self.keys_added = f"{self.help}\n\n{_values_keys()}\n", True
        super().format_help_text(ctx, formatter)


@manifests.command(
    "render",
    cls=_ValuesHelp,
    help=f"""Write the manifests of your services: per service base.yaml (stable and canary Deployments,
Services, ServiceMonitors, NetworkPolicy, PodDisruptionBudgets) and routing for Istio, Linkerd and Gateway API;
the runner's RBAC, the checks in the cluster (Flagger webhook, Argo AnalysisTemplate), the alert rules and the
Grafana dashboard.

Say what to render with a values file (--values) and/or flags (--namespace, --service NAME=IMAGE, repeatable;
flags win over the file). With neither, it renders the demo's four services in namespace orion (this
repository's manifests/). A values file:

{_VALUES_EXAMPLE}
Distributed Locust (load/locust.yaml) is written only with a locustfile: --locustfile, load.locustfile in the
values file, ./load/locustfile.py if it exists, or for the demo's services the sandbox's own.

\b
Examples:
    canary-checks manifests render --values deploy/values.yaml --out deploy/manifests
    canary-checks manifests render --namespace shop --service cart=registry.example/cart:1.2 --out k8s
""",
)
@click.option(
    "--values",
    "values_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Values file: namespace, services (name, image, ...) and more; see above.",
)
@click.option("--namespace", default=None, help="Namespace of everything rendered (over the values file's).")
@click.option(
    "--service",
    "services",
    multiple=True,
    metavar="NAME=IMAGE",
    type=_service_image,
    help="A service and its stable image; repeatable. Sets the image of a service of the values file, or adds one.",
)
@click.option(
    "--locustfile",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Ship this locustfile to a distributed Locust (default: ./load/locustfile.py if it exists; for the demo's "
    "services the sandbox's own; else none).",
)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("manifests"), show_default=True)
def manifests_render(
    values_file: Path | None,
    namespace: str | None,
    services: tuple[tuple[str, str], ...],
    locustfile: Path | None,
    out: Path,
) -> None:
    from canary_checks.manifests import load_values, write_all

    values = load_values(values_file, namespace=namespace, services=services)
    if locustfile is None and values.load.locustfile is None:
        from canary_checks.sandbox import LOCUSTFILE

        own = Path("load/locustfile.py")
        demo = values_file is None and not namespace and not services
        locustfile = own if own.is_file() else LOCUSTFILE if demo else None
    written = write_all(out, values, locustfile)
    out_text = "\n".join(f"  {p}" for p in written)
    click.echo(f"wrote {len(written)} files for namespace {values.namespace}:\n{out_text}")
    if locustfile is None and values.load.locustfile is None:
        click.echo("no locustfile: load/locust.yaml not written (pass --locustfile to add a distributed Locust)")
    if "checks_image" not in values.model_fields_set:
        click.echo(
            f"checks/ and argo/ run the image {values.checks_image}: build docker/checks.Dockerfile, push it to "
            "your registry and set checks_image in the values file"
        )
