"""``canary-checks serve``: the gate and smoke suites behind Flagger's webhooks."""

from __future__ import annotations

import os
from pathlib import Path

import click

from canary_checks import forks
from canary_checks.cli.common import console, load, reports_option, service_configs, suite_option
from canary_checks.cli.types import DURATION, SIZE
from canary_checks.errors import CanaryError, ConfigError
from canary_checks.serve import ServeOptions, format_size


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0 in a Pod).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@click.option(
    "--token-env",
    default="CANARY_WEBHOOK_TOKEN",
    show_default=True,
    help="Environment variable holding the shared token every call must carry.",
)
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Or a file holding it (a mounted Secret).",
)
@click.option(
    "--service-token-env",
    "service_tokens",
    multiple=True,
    metavar="SERVICE=VARIABLE",
    help="Calls for SERVICE must carry the token in this environment variable instead of the shared one; "
    "repeatable. The shared token may then be left unset if every service has its own.",
)
@reports_option()
@click.option(
    "--suite-timeout",
    type=DURATION,
    default=f"{ServeOptions.suite_timeout:g}s",
    show_default=True,
    metavar="DURATION",
    help="Longest a suite may run before the call answers 504 (keep it under the webhook's timeout in the Canary).",
)
@click.option(
    "--max-runs",
    type=click.IntRange(1, 64),
    default=ServeOptions.max_runs,
    show_default=True,
    help="Suites running at once across all services (one per service always); more calls get 429.",
)
@click.option(
    "--max-connections",
    type=click.IntRange(2, 10000),
    default=ServeOptions.max_connections,
    show_default=True,
    help="Connections open at once (more than --max-runs, so the probes always get one). At the cap, the one that "
    "has been sending its request the longest is closed (408) to make room; when every one waits for a suite, the "
    "new one gets 503.",
)
@click.option(
    "--header-timeout",
    type=DURATION,
    default=f"{ServeOptions.header_timeout:g}s",
    show_default=True,
    metavar="DURATION",
    help="Longest from connecting to the end of a request's headers; a slower client gets 408 and is closed.",
)
@click.option(
    "--request-timeout",
    type=DURATION,
    default=f"{ServeOptions.request_timeout:g}s",
    show_default=True,
    metavar="DURATION",
    help="Longest from connecting to the end of a request's body (at least --header-timeout); then 408.",
)
@click.option(
    "--keep-reports",
    type=click.IntRange(min=1),
    default=ServeOptions.keep_reports,
    show_default=True,
    help="Webhook runs kept in --reports; the oldest beyond are deleted after each call.",
)
@click.option(
    "--reports-max-size",
    type=SIZE,
    default=format_size(ServeOptions.reports_max_bytes),
    show_default=True,
    metavar="SIZE",
    help="Disk the webhook runs in --reports may take (bytes, or with Ki, Mi, Gi); the oldest are deleted first. "
    "Keep it well under the volume's size (the manifest's emptyDir: 256Mi).",
)
@suite_option("--gate-suite", "gate", "The gate suite")
@suite_option("--smoke-suite", "smoke", "The smoke suite")
@click.pass_context
def serve_command(
    ctx: click.Context,
    host: str,
    port: int,
    token_env: str,
    token_file: Path | None,
    service_tokens: tuple[str, ...],
    reports: Path,
    suite_timeout: float,
    max_runs: int,
    max_connections: int,
    header_timeout: float,
    request_timeout: float,
    keep_reports: int,
    reports_max_size: int,
    gate_suite: Path | None,
    smoke_suite: Path | None,
) -> None:
    """Answer Flagger's webhooks with the gate and smoke suites.

    \b
    POST /flagger/pre-rollout               smoke suite against the canary (header route)
    POST /flagger/rollout                   gate suite (every analysis interval)
    POST /flagger/confirm-traffic-increase  gate suite, before each weight step
    POST /flagger/confirm-promotion         gate suite, before promotion
    GET  /healthz                           liveness/readiness (no token)

    200 passed; 412 a gate failed or could not decide (the body names them); 401 without the token
    (Authorization: Bearer TOKEN, or metadata.token in the Canary's webhook); 429 while a suite of the same service
    runs; 504 past --suite-timeout. The payload's name and namespace pick the service (with `services:` in the
    config, one of them: another name gets 404); metadata.stage picks the stage's thresholds (default: the
    configured stage nearest the observed split). See docs/integrations.md.

    What a client may cost: headers within --header-timeout, a body of at most 64 KiB with its Content-Length
    (else 411, 400 or 413, before any of it is read) within --request-timeout, one of --max-connections.
    Every option can be set as CANARY_SERVE_<OPTION>, e.g. CANARY_SERVE_MAX_CONNECTIONS=128.
    """
    import signal
    import threading

    from canary_checks.serve import WebhookServer
    from canary_checks.suite import locate

    _check_limits(header_timeout, request_timeout, max_runs, max_connections)
    gate_suite = locate("gate", gate_suite, option="--gate-suite")
    smoke_suite = locate("smoke", smoke_suite, option="--smoke-suite")
    services = service_configs(ctx)
    config, path = load(ctx, service=next(iter(services), None))
    served = list(services) or [config.service]
    own = _service_tokens(service_tokens, served)
    token = _token(token_env, token_file, [name for name in served if name not in own], own)
    options = ServeOptions(token=token, host=host, port=port, reports=reports, gate_suite=gate_suite,
                           smoke_suite=smoke_suite, suite_timeout=suite_timeout, config_path=path, max_runs=max_runs,
                           max_connections=max_connections, header_timeout=header_timeout,
                           request_timeout=request_timeout, keep_reports=keep_reports,
                           reports_max_bytes=reports_max_size, service_tokens=own)  # fmt: skip
    try:
        httpd = WebhookServer(config, options, services).http_server()
    except OSError as e:
        raise CanaryError(f"cannot listen on {host}:{port}: {e.strerror}", fix="pick another --port") from None
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown, daemon=True).start())
    console.print(f"serve: listening on http://{host}:{httpd.server_address[1]} for Flagger's webhooks "
                  f"(config {path or 'built-in defaults'}, reports in {reports}/)", highlight=False)  # fmt: skip
    if services:
        console.print(f"serve: services {', '.join(services)}", highlight=False)
    # the first call's suite starts as fast as the next ones
    forks.prepare(config, *services.values())
    try:
        httpd.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if pending := httpd.pending_reports():
            console.print(f"serve: stopping; finishing the reports of the calls answered ({pending} left)")
        httpd.server_close()
    console.print("serve: stopped")


def _check_limits(header_timeout: float, request_timeout: float, max_runs: int, max_connections: int) -> None:
    """Refuse limits that contradict each other."""
    if request_timeout < header_timeout:
        raise click.UsageError(
            f"--request-timeout ({request_timeout:g}s) is shorter than --header-timeout ({header_timeout:g}s): a "
            "request cannot end before its headers; raise --request-timeout or lower --header-timeout"
        )
    if max_connections <= max_runs:
        raise click.UsageError(
            f"--max-connections ({max_connections}) must be more than --max-runs ({max_runs}): while the suites run, "
            "the probes and the other calls' 429 answers need connections too; raise --max-connections"
        )


def _token(token_env: str, token_file: Path | None, without: list[str], own: dict[str, str]) -> str:
    """The shared token, from --token-file or $TOKEN_ENV; none is an error while a service in ``without`` (those
    without a token of their own) needs it."""
    token = token_file.read_text().strip() if token_file else os.environ.get(token_env, "").strip()
    if not token and without:
        raise ConfigError(
            "no webhook token: every call must be authenticated"
            + (f" (the calls for {', '.join(without)})" if own else ""),
            where=str(token_file) if token_file else f"${token_env}",
            fix=f"export {token_env}=<a long random string> (the same as the Canary's webhook sends), or --token-file"
            + (", or --service-token-env SERVICE=VARIABLE for each of them" if own else ""),
        )
    return token


def _service_tokens(values: tuple[str, ...], served: list[str]) -> dict[str, str]:
    """``--service-token-env SERVICE=VARIABLE`` → service → its token, read now."""
    tokens: dict[str, str] = {}
    for value in values:
        service, sep, variable = (part.strip() for part in value.partition("="))
        if not sep or not service or not variable:
            raise click.BadParameter(f"expected SERVICE=VARIABLE; got {value!r}", param_hint="--service-token-env")
        if service not in served:
            raise click.BadParameter(
                f"{service!r} is not a service of the config; it has {', '.join(served)}",
                param_hint="--service-token-env",
            )
        tokens[service] = os.environ.get(variable, "").strip()
        if not tokens[service]:
            raise ConfigError(
                f"environment variable {variable} is empty or unset",
                where=f"--service-token-env {value}",
                fix=f"export {variable}=<a long random string> (what {service}'s Canary webhook sends)",
            )
    return tokens
