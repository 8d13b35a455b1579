"""Several services in one canary.yaml: shared settings at the top, a section per service under `services:`,
`--service` choosing one; and one-service files as before."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary_checks.config import deep_merge, load_config
from canary_checks.errors import ConfigError
from canary_checks.serve import ServeOptions, WebhookServer
from tests.conftest import GATE_SUITE, PYTESTER_ARGS, PromStub, canary_checks_here, healthy, serving

MULTI = """\
namespace: orion
window: 30s
prometheus: {url: "http://prometheus.monitoring:9090", timeout: 20s}
gates:
  error_rate: {threshold: 4, severity: warning}
  latency_p95: {threshold: 300}
smoke:
  health: [/healthz]
  requests: [{name: home, path: /}]
services:
  auth: {}
  gateway:
    namespace: edge
    workloads: {canary: gw-next}
    gates:
      error_rate: {threshold: 2}
    stage_gates: {25: {latency_p95: {threshold: 250}}}
    smoke:
      url: http://gateway.edge.svc.cluster.local
      requests: [{name: route, path: /api/route}]
  notifications:
    prometheus: {url: "http://thanos.monitoring:9090"}
    stages: [10, 100]
"""


@pytest.fixture
def multi(tmp_path: Path) -> Path:
    path = tmp_path / "canary.yaml"
    path.write_text(MULTI)
    return path


def test_a_service_takes_the_shared_settings_and_its_section_over_them(multi: Path) -> None:
    gateway = load_config(multi, {"service": "gateway"})
    assert (gateway.service, gateway.namespace, gateway.window) == ("gateway", "edge", 30.0)
    assert (gateway.workload("canary"), gateway.workload("stable")) == ("gw-next", "gateway-stable")
    # mappings merge at every depth: the shared severity stays, the section's threshold wins
    assert (gateway.gates.error_rate.threshold, gateway.gates.error_rate.severity.value) == (2.0, "warning")
    assert gateway.gates.latency_p95.threshold == 300
    assert gateway.gates_for(25).latency_p95.threshold == 250
    # lists replace: the section's smoke requests, not both
    assert [r.name for r in gateway.smoke.requests] == ["route"]
    assert gateway.smoke.health == ("/healthz",)
    assert gateway.prometheus.url == "http://prometheus.monitoring:9090" and gateway.prometheus.timeout == 20

    auth = load_config(multi, {"service": "auth"})
    assert (auth.service, auth.namespace, auth.gates.error_rate.threshold) == ("auth", "orion", 4.0)
    assert [r.name for r in auth.smoke.requests] == ["home"]

    notifications = load_config(multi, {"service": "notifications"})
    assert notifications.prometheus.url == "http://thanos.monitoring:9090"
    assert notifications.prometheus.timeout == 20  # the shared prometheus settings it did not change
    assert notifications.stages == (10, 100)


def test_flags_apply_over_the_chosen_service(multi: Path) -> None:
    config = load_config(multi, {"service": "gateway", "namespace": "edge-2", "window": "1m"})
    assert (config.service, config.namespace, config.window) == ("gateway", "edge-2", 60.0)


def test_no_service_chosen_among_several_lists_them(multi: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(multi)
    message = caught.value.message
    assert str(multi) in message and "3 services (auth, gateway, notifications)" in message
    assert "--service NAME" in message


def test_an_unknown_service_names_those_that_exist(multi: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(multi, {"service": "billing"})
    assert "no service 'billing' in this file; it describes auth, gateway, notifications" in caught.value.message
    assert "canary-checks init --service billing" in caught.value.message


def test_one_service_section_needs_no_choice(tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text("namespace: shop\nservices:\n  cart:\n    window: 45s\n")
    config = load_config(path)
    assert (config.service, config.namespace, config.window) == ("cart", "shop", 45.0)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            "gates: {error_rate: {threshold: 250}}",
            "(service gateway): services.gateway.gates.error_rate.threshold: expected a percent from 0 to 100",
        ),
        ("namespace: Edge_1", "services.gateway.namespace: 'Edge_1' is not a valid Kubernetes namespace"),
        (
            "gates: {error_rat: {threshold: 2}}",
            "services.gateway.gates: 'error_rat' is not a built-in gate (did you mean error_rate?)",
        ),
        ("smoke: {requests: [{name: x, path: nope}]}", "services.gateway.smoke.requests.0.path: String should match"),
        (
            "stage_gates: {25: {error_rate: {threshold: 300}}}",
            "(service gateway): services.gateway.stage_gates.25: error_rate.threshold: expected a percent",
        ),
    ],
)
def test_a_mistake_in_a_section_is_named_with_its_full_path(tmp_path: Path, section: str, expected: str) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(f"window: 30s\nservices:\n  auth: {{}}\n  gateway: {{{section}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {"service": "gateway"})
    assert expected in caught.value.message
    load_config(path, {"service": "auth"})  # the other service is not held up by it


def test_a_mistake_in_the_shared_settings_is_named_as_written(tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text("window: -3s\nservices:\n  auth: {}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "(service auth): window: expected a duration such as 30s" in caught.value.message
    assert "services.auth.window" not in caught.value.message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("services: []", "services: expected a mapping of service name to its settings; got []"),
        ("services: {}", "services: expected a mapping of service name to its settings; got {}"),
        ("service: auth\nservices: {auth: {}}", "service: 'auth' next to `services`"),
        ("services: {auth: [1]}", "services.auth: expected a mapping of the settings that differ for auth"),
        ("services: {auth: {service: user}}", "services.auth.service: not allowed in a service's section"),
        ("services: {auth: {services: {x: {}}}}", "services.auth.services: not allowed"),
        ("services: {Auth_1: {}}", "services.Auth_1: the service name 'Auth_1' is not a valid Kubernetes name"),
    ],
)
def test_a_malformed_services_key_is_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, {"service": "auth"})
    assert expected in caught.value.message
    assert caught.value.fix or "not allowed" not in expected


def test_a_one_service_file_is_unchanged_and_service_still_renames(tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text("service: user\nnamespace: orion\n")
    assert load_config(path).service == "user"
    assert load_config(path, {"service": "notifications"}).service == "notifications"


def test_deep_merge_merges_mappings_and_replaces_the_rest() -> None:
    base = {"a": {"b": 1, "c": {"d": 2}}, "l": [1, 2], "s": "x"}
    over = {"a": {"c": {"e": 3}}, "l": [3], "s": {"now": "a mapping"}}
    assert deep_merge(base, over) == {"a": {"b": 1, "c": {"d": 2, "e": 3}}, "l": [3], "s": {"now": "a mapping"}}
    assert base["a"] == {"b": 1, "c": {"d": 2}}  # the inputs are left as they were


# ---- the command: config show, a service that does not exist ------------------------------------------------------


def test_config_show_prints_what_is_in_force_for_a_service_and_where_it_came_from(multi: Path) -> None:
    done = canary_checks_here("config", "show", "--service", "gateway", cwd=multi.parent)
    assert done.returncode == 0, done.stderr
    header, _, body = done.stdout.partition("\nservice:")
    assert "# service gateway, one of auth, gateway, notifications (--service chooses)" in header
    assert (
        "# from services.gateway: namespace, workloads.canary, gates.error_rate.threshold, "
        "stage_gates.25.latency_p95.threshold, smoke.url, smoke.requests" in header
    )
    shown = yaml.safe_load("service:" + body)
    assert (shown["service"], shown["namespace"], shown["window"]) == ("gateway", "edge", 30.0)
    assert shown["gates"]["error_rate"] == {"threshold": 2.0, "severity": "warning", "on_no_data": "fail",
                                            "enabled": True}  # fmt: skip
    auth = canary_checks_here("config", "show", "--service", "auth", cwd=multi.parent)
    assert "# from services.auth: nothing (every setting is shared)" in auth.stdout
    # before the command, or as CANARY_SERVICE, for every command (the sandbox's, watch, replay too)
    for args, env in ((("--service", "notifications", "config", "show"), {}),
                      (("config", "show"), {"CANARY_SERVICE": "notifications"})):  # fmt: skip
        done = canary_checks_here(*args, cwd=multi.parent, env=env)
        assert "# service notifications, one of" in done.stdout, done.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("config", "show", "--service", "billing"), "no service 'billing' in this file; it describes auth, gateway"),
        (("config", "show"), "this file describes 3 services (auth, gateway, notifications); which one is meant?"),
        (("gates", "--stage", "25", "--service", "billing"), "no service 'billing' in this file"),
        (("monitor", "billing", "--duration", "1s"), "no service 'billing' in this file"),
        (("run", "billing", "registry.example/billing:2", "--dry-run"), "no service 'billing' in this file"),
        (("gates", "--stage", "25"), "--service NAME"),
        (("gates", "--stage", "25", "--service", "notifications"), "25 is not one of the stages [10, 100]"),
    ],
)
def test_every_command_names_the_services_when_the_one_asked_for_is_not_there(
    multi: Path, args: tuple[str, ...], expected: str
) -> None:
    done = canary_checks_here(*args, cwd=multi.parent)
    assert done.returncode == 2, done.stdout + done.stderr
    assert expected in " ".join(done.stderr.split()), done.stderr
    assert "Traceback" not in done.stderr


# ---- serve: one server for several services ------------------------------------------------------------------------

STAND_IN = """
def test_gate(canary_target):
    config = canary_target.config
    got = (config.service, config.namespace, config.gates.error_rate.threshold)
    assert got == ("gateway", "edge", 2.0), f"not gateway's own settings: {got}"
"""


@pytest.fixture
def two_services(multi: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    suite = tmp_path / "stand-in"
    suite.mkdir()
    (suite / "test_stand_in_services.py").write_text(STAND_IN)
    options = ServeOptions(token=TOKEN, port=0, reports=tmp_path / "reports", gate_suite=suite, smoke_suite=suite,
                           config_path=multi, service_tokens={"gateway": GATEWAY_TOKEN})  # fmt: skip
    services = {name: load_config(multi, {"service": name}) for name in ("auth", "gateway", "notifications")}
    httpd = WebhookServer(services["auth"], options, services).http_server()
    with serving(httpd):
        yield f"http://127.0.0.1:{httpd.server_address[1]}", tmp_path / "reports"


TOKEN, GATEWAY_TOKEN = "shared-token", "gateway-token"


def call(url: str, name: str, token: str, stage: str = "25") -> tuple[int, dict[str, Any]]:
    payload = {"name": name, "namespace": "", "phase": "Progressing", "metadata": {"stage": stage}}
    request = urllib.request.Request(f"{url}/flagger/rollout", json.dumps(payload).encode(),
                                     {"Authorization": f"Bearer {token}"}, method="POST")  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_serve_runs_each_services_suite_on_its_own_settings_with_its_own_token(two_services: tuple[str, Path]) -> None:
    url, _ = two_services
    status, body = call(url, "gateway", GATEWAY_TOKEN)
    assert (status, body["outcome"], body["service"], body["namespace"]) == (200, "passed", "gateway", "edge")
    # the shared token opens auth (checked before its stage, which is auth's own stages')
    status, body = call(url, "auth", TOKEN, stage="30")
    assert (status, body["error"]) == (400, "metadata.stage: 30 is not one of the stages [5, 25, 50, 100] of auth")
    # a service with its own token takes only that one, and its token opens no other service
    assert call(url, "gateway", TOKEN)[0] == 401
    assert call(url, "auth", GATEWAY_TOKEN)[0] == 401
    # each service's stages are its own
    status, body = call(url, "notifications", TOKEN)
    assert (status, body["error"]) == (400, "metadata.stage: 25 is not one of the stages [10, 100] of notifications")


def test_serve_refuses_a_service_not_in_the_config_naming_those_that_are(two_services: tuple[str, Path]) -> None:
    url, reports = two_services
    status, body = call(url, "billing", TOKEN)
    assert status == 404 and body["error"] == "no service 'billing' in the config; it has auth, gateway, notifications"
    assert "services.billing" in body["fix"]
    status, body = call(url, "", TOKEN)
    assert status == 400 and body["error"].startswith("name/namespace:")  # no name at all is a bad request
    assert not reports.exists()  # no suite ran


def test_serve_needs_a_token_for_every_service_and_knows_the_services_the_tokens_name(multi: Path) -> None:
    env = {"GATEWAY_TOKEN": GATEWAY_TOKEN, "CANARY_WEBHOOK_TOKEN": ""}
    done = canary_checks_here("serve", "--service-token-env", "gateway=GATEWAY_TOKEN", cwd=multi.parent, env=env)
    assert done.returncode == 2
    assert "no webhook token: every call must be authenticated (the calls for auth, notifications)" in done.stderr
    assert "--service-token-env SERVICE=VARIABLE" in done.stderr
    done = canary_checks_here("serve", "--service-token-env", "billing=GATEWAY_TOKEN", cwd=multi.parent, env=env)
    assert done.returncode == 2
    assert "'billing' is not a service of the config; it has auth, gateway, notifications" in done.stderr


# ---- the pytest plugin: --service chooses the section the packaged suite judges ------------------------------------

PLUGIN_CONFIG = """\
namespace: orion
prometheus: {{url: "{url}"}}
window: 30s
services:
  auth:
    gates: {{latency_p95: {{threshold: 100, severity: critical}}}}
  gateway:
    namespace: edge
"""


@pytest.fixture
def services_suite(pytester: pytest.Pytester, prom: PromStub) -> pytest.Pytester:
    pytester.makepyfile(test_canary_gates_of_services=GATE_SUITE)
    pytester.makefile(".yaml", canary=PLUGIN_CONFIG.format(url=prom.url))
    return pytester


def test_the_gate_suite_judges_the_chosen_service_on_its_own_thresholds(
    services_suite: pytest.Pytester, prom: PromStub
) -> None:
    healthy(prom)  # p95 120 ms: within the shared 500 ms, over the 100 ms auth's section sets (critical)
    result = services_suite.runpytest(*PYTESTER_ARGS, "--stage", "25", "--service", "auth")
    result.stdout.fnmatch_lines(["canary-checks: auth-canary vs auth-stable in namespace orion, mesh istio, stage 25*"])
    result.stdout.fnmatch_lines(["*latency_p95: FAIL (critical)*canary p95 latency 120 ms > 100 ms*"])
    result.assert_outcomes(passed=14, failed=1)
    gateway = services_suite.runpytest(*PYTESTER_ARGS, "--stage", "25", "--service", "gateway", "--collect-only")
    gateway.stdout.fnmatch_lines(["canary-checks: gateway-canary vs gateway-stable in namespace edge, *"])


def test_the_gate_suite_without_service_lists_the_services(services_suite: pytest.Pytester) -> None:
    result = services_suite.runpytest(*PYTESTER_ARGS, "--stage", "25")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*this file describes 2 services (auth, gateway); which one is meant?*"])
    unknown = services_suite.runpytest(*PYTESTER_ARGS, "--stage", "25", "--service", "billing")
    unknown.stderr.fnmatch_lines(["*no service 'billing' in this file; it describes auth, gateway*"])


# ---- init --service: a service more in the same canary.yaml -------------------------------------------------------


def test_init_adds_services_to_the_file_it_wrote_and_never_overwrites_one(tmp_path: Path) -> None:
    first = canary_checks_here("init", "--service", "auth", "--namespace", "orion", "--ci", "none", cwd=tmp_path)
    assert first.returncode == 0
    before = (tmp_path / "canary.yaml").read_text()
    added = canary_checks_here("init", "--service", "gateway", "--namespace", "edge", cwd=tmp_path)
    assert added.returncode == 0, added.stderr
    assert "added services.gateway to canary.yaml (namespace edge" in added.stdout
    assert "pytest suites/gate --stage 5 --service gateway" in added.stdout
    text = (tmp_path / "canary.yaml").read_text()
    assert "# The service under release" in text  # the file's comments stay
    path = tmp_path / "canary.yaml"
    auth, gateway = load_config(path, {"service": "auth"}), load_config(path, {"service": "gateway"})
    (tmp_path / "before.yaml").write_text(before)
    assert auth == load_config(tmp_path / "before.yaml")  # auth: every setting as before
    assert (gateway.namespace, gateway.smoke.url) == ("edge", "http://gateway.edge.svc.cluster.local")
    assert gateway.prometheus == auth.prometheus and gateway.gates == auth.gates

    assert canary_checks_here("init", "--service", "user", "--mesh", "linkerd", cwd=tmp_path).returncode == 0
    user = load_config(path, {"service": "user"})
    assert (user.namespace, user.mesh.value) == ("orion", "linkerd")
    assert user.smoke.url == "http://user.orion.svc.cluster.local"

    again = canary_checks_here("init", "--service", "gateway", "--namespace", "other", cwd=tmp_path)
    assert again.returncode == 2 and "services.gateway already exists; nothing was written" in again.stderr
    assert "--force" in again.stderr and load_config(path, {"service": "gateway"}).namespace == "edge"
    forced = canary_checks_here("init", "--service", "gateway", "--namespace", "other", "--force", cwd=tmp_path)
    assert forced.returncode == 0 and load_config(path, {"service": "gateway"}).namespace == "other"
    assert load_config(path, {"service": "user"}).mesh.value == "linkerd"  # the section after it is intact


@pytest.mark.parametrize(
    "text",
    [
        "namespace: shop\nservices: {cart: {window: 45s}, pay: {}}\n# the end\n",
        "namespace: shop\nservices:\n    cart:\n        window: 45s\n    pay: {}\n\n# all\nstages: [5, 100]\n",
    ],
)
def test_init_adds_a_section_to_any_layout_of_services(tmp_path: Path, text: str) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text(text)
    done = canary_checks_here("init", "--service", "ship", "--url", "http://ship:8080", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    ship = load_config(path, {"service": "ship"})
    assert (ship.namespace, ship.smoke.url) == ("shop", "http://ship:8080")
    assert load_config(path, {"service": "cart"}).window == 45
    last = path.read_text().splitlines()[-1]
    assert last in ("# the end", "stages: [5, 100]")  # what followed services stays where it was
    forced = canary_checks_here("init", "--service", "cart", "--namespace", "carts", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    cart = load_config(path, {"service": "cart"})
    assert (cart.namespace, cart.window) == ("carts", 60)  # the section replaced, not merged
    assert load_config(path, {"service": "ship"}).smoke.url == "http://ship:8080"  # the others as they were
    assert load_config(path, {"service": "pay"}).namespace == "shop"


def test_the_readmes_four_services_are_each_what_it_says(tmp_path: Path) -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    section = readme.split("### Several services in one canary.yaml", 1)[1]
    path = tmp_path / "canary.yaml"
    path.write_text(section.split("```yaml\n", 1)[1].split("```", 1)[0])
    auth, gateway, notifications, user = (load_config(path, {"service": s})
                                          for s in ("auth", "gateway", "notifications", "user"))  # fmt: skip
    assert (auth.gates.error_rate.threshold, auth.gates.latency_p95.threshold, auth.window) == (1, 400, 120)
    assert [r.name for r in auth.smoke.requests] == ["token"] and auth.smoke.health == ("/healthz", "/readyz")
    assert (gateway.namespace, gateway.workload("canary"), gateway.gates.latency_p95.threshold) == (
        "edge", "gateway-next", 150)  # fmt: skip
    assert gateway.gates_for(50).latency_p99.threshold == 500 and gateway.gates.error_rate.threshold == 5
    assert (notifications.stages, notifications.min_requests) == ((10, 50, 100), 5)
    assert (user.mesh.value, user.namespace, user.prometheus.bearer_token_env) == (
        "linkerd",
        "orion",
        "PROMETHEUS_TOKEN",
    )


def test_run_takes_the_services_own_stages_and_no_step_outside_them(multi: Path) -> None:
    args = ("run", "notifications", "registry.example/notifications:3", "--router", "sandbox", "--dry-run",
            "--skip-validation")  # fmt: skip
    planned = canary_checks_here(*args, cwd=multi.parent)
    assert planned.returncode == 0, planned.stderr
    weights = [line for line in planned.stdout.splitlines() if line.startswith("would set the canary weight")]
    assert [w.split()[6] for w in weights] == ["10", "100"]  # notifications' stages: [10, 100]
    told = canary_checks_here(*args, "--traffic-steps", "50,100", cwd=multi.parent)
    assert told.returncode == 2 and "would set" not in told.stdout
    assert "'--traffic-steps': 50 is not one of the stages [10, 100] of notifications" in " ".join(told.stderr.split())


def test_config_show_checks_every_services_section_while_the_others_act_on_theirs(tmp_path: Path) -> None:
    path = tmp_path / "canary.yaml"
    path.write_text("services:\n  checkout: {}\n  broken:\n    gates: {error_rate: {treshold: 2}}\n")
    assert load_config(path, {"service": "checkout"}).service == "checkout"  # its release is nobody's hostage
    shown = canary_checks_here("config", "show", "--service", "checkout", cwd=tmp_path)
    assert shown.returncode != 0 and "Traceback" not in shown.stderr
    assert "(service broken): services.broken.gates.error_rate.treshold: unknown key (did you mean threshold?)" in (
        shown.stderr
    )
