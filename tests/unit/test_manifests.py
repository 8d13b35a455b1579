"""The manifests under manifests/: current with the renderer, valid against the Kubernetes and upstream CRD schemas
with unknown fields rejected, and meeting the security and routing rules for every service."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from canary_checks.config import parse_duration
from canary_checks.manifests import DEMO, SERVICES, render_all
from canary_checks.sandbox import LOCUSTFILE
from tests.conftest import canary_checks_here

REPO = Path(__file__).parents[2]
MANIFESTS = REPO / "manifests"
SCHEMAS = Path(__file__).parents[1] / "data" / "crd-schemas"
K8S_VERSION = "1.31"
BUILT_IN_GROUPS = ("v1", "apps/", "policy/", "networking.k8s.io/", "rbac.authorization.k8s.io/")


def rendered() -> dict[str, str]:
    return render_all(DEMO, LOCUSTFILE.read_text())


def parsed(text: str) -> list[Any]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where PyYAML has it: collection parses them all
    return [o for o in yaml.load_all(text, Loader=loader) if o]


@functools.cache  # read-only: a test that changes an object changes a deep copy
def objects() -> list[tuple[str, dict[str, Any]]]:
    return [
        (str(path.relative_to(MANIFESTS)), o)
        for path in sorted(MANIFESTS.rglob("*.yaml"))
        for o in parsed(path.read_text())
    ]


TEAM_VALUES = """\
namespace: shop
checks_image: registry.example/canary-checks:0.1.0
baseline: true
services:
  - name: cart
    image: registry.example/cart:1.2
    canary_image: registry.example/cart:1.3
    port: 3000
    metrics_port: 3001
    health_path: /health
    ready_path: /ready
    replicas: 2
    cpu_limit: "1"
    memory_limit: 1Gi
    env: {CART_TTL: "60"}
"""
"""A team's values file: its namespace, service and images, nothing of the demo; with a baseline."""


def team_values(tmp: Path | None = None) -> Any:
    from canary_checks.manifests import load_values

    folder = tmp or Path(tempfile.mkdtemp())
    (folder / "values.yaml").write_text(TEAM_VALUES)
    return load_values(folder / "values.yaml")


@functools.cache  # read-only, as objects()
def team_files() -> dict[str, str]:
    return render_all(team_values(), "from locust import HttpUser\n")


@functools.cache  # read-only, as objects()
def team_objects() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"shop:{relative}", o)
        for relative, text in team_files().items()
        if relative.endswith(".yaml")
        for o in parsed(text)
    ]


def of_kind(kind: str) -> list[dict[str, Any]]:
    return [o for _, o in objects() if o["kind"] == kind]


def closed(schema: Any) -> Any:
    """The schema with unknown fields rejected wherever it lists its properties (as a strict API server would)."""
    if isinstance(schema, dict):
        schema = {k: closed(v) for k, v in schema.items()}
        if "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema.setdefault("additionalProperties", False)
        return schema
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


def crd_schema(obj: dict[str, Any]) -> dict[str, Any]:
    index = json.loads((SCHEMAS / "index.json").read_text())
    for file, meta in index.items():
        if meta["apiVersion"] == obj["apiVersion"] and meta["kind"] == obj["kind"]:
            schema = closed(json.loads((SCHEMAS / file).read_text()))
            # apiVersion, kind and metadata are the API server's own, not in the CRD's schema.
            schema.setdefault("properties", {}).update(
                {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}
            )
            return schema
    raise AssertionError(f"no upstream schema for {obj['apiVersion']} {obj['kind']}")


def test_committed_manifests_are_what_the_renderer_writes() -> None:
    for relative, text in rendered().items():
        path = MANIFESTS / relative
        assert path.is_file(), f"{relative} missing: canary-checks manifests render"
        assert path.read_text() == text, f"{relative} is stale: canary-checks manifests render"


@pytest.mark.parametrize(
    ("where", "obj"), [o for o in [*objects(), *team_objects()] if o[1]["apiVersion"].startswith(BUILT_IN_GROUPS)]
)
def test_built_in_kinds_validate_against_the_kubernetes_schema(where: str, obj: dict[str, Any]) -> None:
    kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def test_the_kubernetes_check_rejects_a_misspelt_field() -> None:
    deployment = copy.deepcopy(of_kind("Deployment")[0])
    deployment["spec"]["replicaz"] = deployment["spec"].pop("replicas")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


OTHER_CONTROLLERS = ("argoproj.io/", "flagger.app/")
"""Examples for teams on Argo Rollouts and Flagger: no upstream schema of theirs is kept here (shared/crd-schemas
has the mesh and monitoring ones), so their shape is checked below and their Pod specs against Kubernetes'."""


@pytest.mark.parametrize(
    ("where", "obj"),
    [
        o
        for o in [*objects(), *team_objects()]
        if not o[1]["apiVersion"].startswith((*BUILT_IN_GROUPS, *OTHER_CONTROLLERS))
    ],
)
def test_custom_resources_validate_against_their_upstream_schema(where: str, obj: dict[str, Any]) -> None:
    # Not jsonschema.validate: it checks the schema's own patterns as Python regexes, and upstream writes Go's.
    jsonschema.Draft7Validator(crd_schema(obj)).validate(obj)


def test_the_crd_check_rejects_a_misspelt_weight() -> None:
    vs = copy.deepcopy(of_kind("VirtualService")[0])
    vs["spec"]["http"][1]["route"][0]["wieght"] = vs["spec"]["http"][1]["route"][0].pop("weight")
    with pytest.raises(jsonschema.ValidationError, match="wieght"):
        jsonschema.Draft7Validator(crd_schema(vs)).validate(vs)


def workloads() -> list[dict[str, Any]]:
    return of_kind("Deployment")


@pytest.mark.parametrize("deployment", workloads(), ids=lambda d: d["metadata"]["name"])
def test_every_container_is_locked_down(deployment: dict[str, Any]) -> None:
    pod = deployment["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 1001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["readOnlyRootFilesystem"] is True, container["name"]
        assert sc["allowPrivilegeEscalation"] is False, container["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, container["name"]
        assert sc.get("runAsUser", pod["securityContext"]["runAsUser"]) == 1001
        assert sc.get("privileged", False) is False
        assert {"requests", "limits"} <= set(container["resources"]), container["name"]


@pytest.mark.parametrize("svc", SERVICES, ids=lambda s: s.name)
def test_each_service_has_stable_and_canary_done_the_same_way(svc: Any) -> None:
    base = {
        o["kind"] + "/" + o["metadata"]["name"]: o
        for o in yaml.safe_load_all((MANIFESTS / svc.name / "base.yaml").read_text())
    }
    stable, canary = base[f"Deployment/{svc.name}-stable"], base[f"Deployment/{svc.name}-canary"]
    assert (stable["spec"]["replicas"], canary["spec"]["replicas"]) == (3, 1)
    for version, deployment in (("stable", stable), ("canary", canary)):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert labels["version"] == version and labels["app"] == svc.name
        pod = deployment["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == svc.name
        assert pod["affinity"]["podAntiAffinity"]
        container = pod["containers"][0]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            assert probe in container, (version, probe)
        assert container["resources"]["limits"] == {"cpu": svc.cpu_limit, "memory": svc.memory_limit}
        service = base[f"Service/{svc.name}-{version}"]
        assert service["spec"]["selector"] == {"app": svc.name, "version": version}
        assert base[f"ServiceMonitor/{svc.name}-{version}"]["spec"]["selector"]["matchLabels"]["version"] == version
        assert f"PodDisruptionBudget/{svc.name}-{version}" in base
    assert base[f"Service/{svc.name}"]["spec"]["selector"] == {"app": svc.name}
    assert base[f"ServiceAccount/{svc.name}"]["automountServiceAccountToken"] is False
    assert f"NetworkPolicy/{svc.name}" in base


@pytest.mark.parametrize("svc", SERVICES, ids=lambda s: s.name)
def test_routing_splits_95_5_and_sends_the_canary_header_to_the_canary(svc: Any) -> None:
    vs, dr = yaml.safe_load_all((MANIFESTS / svc.name / "istio.yaml").read_text())
    header, primary = vs["spec"]["http"]
    assert header["match"] == [{"headers": {"x-canary": {"exact": "true"}}}]
    assert header["route"] == [{"destination": {"host": svc.name, "subset": "canary"}}]
    assert {r["destination"]["subset"]: r["weight"] for r in primary["route"]} == {"stable": 95, "canary": 5}
    assert {s["name"]: s["labels"] for s in dr["spec"]["subsets"]} == {
        "stable": {"version": "stable"},
        "canary": {"version": "canary"},
    }
    assert dr["spec"]["trafficPolicy"]["outlierDetection"] and dr["spec"]["trafficPolicy"]["connectionPool"]
    (split,) = yaml.safe_load_all((MANIFESTS / svc.name / "linkerd.yaml").read_text())
    assert {b["service"]: b["weight"] for b in split["spec"]["backends"]} == {
        f"{svc.name}-stable": 95,
        f"{svc.name}-canary": 5,
    }
    (route,) = yaml.safe_load_all((MANIFESTS / svc.name / "gateway-api.yaml").read_text())
    header_rule, weighted = route["spec"]["rules"]
    assert header_rule["matches"][0]["headers"] == [{"type": "Exact", "name": "x-canary", "value": "true"}]
    assert [b["name"] for b in header_rule["backendRefs"]] == [f"{svc.name}-canary"]
    assert {b["name"]: b["weight"] for b in weighted["backendRefs"]} == {
        f"{svc.name}-stable": 95,
        f"{svc.name}-canary": 5,
    }


@pytest.mark.parametrize("svc", SERVICES, ids=lambda s: s.name)
def test_with_a_baseline_every_service_has_a_scaled_down_copy_of_stable_and_a_weight_0_backend(svc: Any) -> None:
    files = render_all(DEMO.model_copy(update={"baseline": True}))
    base = {o["kind"] + "/" + o["metadata"]["name"]: o for o in yaml.safe_load_all(files[f"{svc.name}/base.yaml"])}
    stable, baseline = base[f"Deployment/{svc.name}-stable"], base[f"Deployment/{svc.name}-baseline"]
    assert baseline["spec"]["replicas"] == 0  # the runner scales it up beside a canary
    assert baseline["spec"]["selector"]["matchLabels"] == {"app": svc.name, "version": "baseline"}
    assert baseline["spec"]["template"]["metadata"]["labels"]["version"] == "baseline"
    assert baseline["spec"]["template"]["spec"] == stable["spec"]["template"]["spec"]  # stable's image and spec
    assert base[f"Service/{svc.name}-baseline"]["spec"]["selector"] == {"app": svc.name, "version": "baseline"}
    assert f"ServiceMonitor/{svc.name}-baseline" in base
    vs, dr = yaml.safe_load_all(files[f"{svc.name}/istio.yaml"])
    assert {r["destination"]["subset"]: r["weight"] for r in vs["spec"]["http"][1]["route"]} == {
        "stable": 95, "canary": 5, "baseline": 0}  # fmt: skip
    assert {"name": "baseline", "labels": {"version": "baseline"}} in dr["spec"]["subsets"]
    (split,) = yaml.safe_load_all(files[f"{svc.name}/linkerd.yaml"])
    assert {"service": f"{svc.name}-baseline", "weight": 0} in split["spec"]["backends"]
    (route,) = yaml.safe_load_all(files[f"{svc.name}/gateway-api.yaml"])
    assert {b["name"]: b["weight"] for b in route["spec"]["rules"][1]["backendRefs"]}[f"{svc.name}-baseline"] == 0
    # the files without a baseline are what they were
    assert "baseline" not in "".join(rendered()[f"{svc.name}/{f}.yaml"] for f in ("base", "istio", "linkerd"))


def test_a_baseline_with_sticky_sessions_is_refused_when_rendering(tmp_path: Path) -> None:
    from canary_checks.errors import ConfigError
    from canary_checks.manifests import load_values

    (tmp_path / "values.yaml").write_text(TEAM_VALUES + "sticky_cookie: canary-checks\n")
    with pytest.raises(ConfigError, match="baseline and sticky_cookie are both set"):
        load_values(tmp_path / "values.yaml")


def test_runner_rbac_is_least_privilege_in_its_namespace() -> None:
    kinds = {o["kind"] for where, o in objects() if where.startswith("rbac/")}
    assert kinds == {"ServiceAccount", "Role", "RoleBinding"}, "nothing cluster-wide"
    (role,) = [o for where, o in objects() if where == "rbac/runner.yaml" and o["kind"] == "Role"]
    grants = {
        (g, r): set(rule["verbs"]) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]
    }
    assert grants[("", "pods")] == grants[("", "events")] == {"get", "list", "watch"}
    for group, resource in (
        ("apps", "deployments"),
        ("networking.istio.io", "virtualservices"),
        ("split.smi-spec.io", "trafficsplits"),
        ("gateway.networking.k8s.io", "httproutes"),
    ):
        assert {"get", "patch"} <= grants[(group, resource)] <= {"get", "list", "patch"}, resource
    assert not any(v & {"create", "delete", "update", "*"} for v in grants.values())
    assert all("*" not in key for key in grants)


def test_distributed_locust_runs_the_repos_locustfile() -> None:
    (config_map,) = [o for where, o in objects() if where == "load/locust.yaml" and o["kind"] == "ConfigMap"]
    assert config_map["data"]["locustfile.py"] == LOCUSTFILE.read_text()
    roles = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["args"]
        for d in of_kind("Deployment")
        if d["metadata"]["name"].startswith("locust")
    }
    assert "--master" in roles["locust-master"] and "--worker" in roles["locust-worker"]


def test_the_checks_in_the_cluster_only_read_and_serve_the_webhooks_with_a_secret_token() -> None:
    checks = {o["kind"]: o for where, o in objects() if where == "checks/webhook.yaml"}
    assert set(checks) == {"ServiceAccount", "Role", "RoleBinding", "Deployment", "Service"}
    verbs = {v for rule in checks["Role"]["rules"] for v in rule["verbs"]}
    assert verbs == {"get", "list"}, "the gates only read"
    pod = checks["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:2] == ["canary-checks", "serve"] and "--token-file" in command
    token_dir = next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "token")
    assert command[command.index("--token-file") + 1].startswith(token_dir)
    assert {"name": "token", "secret": {"secretName": "canary-checks-webhook"}} in pod["volumes"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert checks["Deployment"]["spec"]["replicas"] == 1  # one process keeps "one run per service" true


def test_the_argo_analysis_template_runs_the_gate_suite_in_a_job() -> None:
    (template,) = [o for where, o in objects() if where == "argo/analysis-template.yaml"]
    assert (template["apiVersion"], template["kind"]) == ("argoproj.io/v1alpha1", "AnalysisTemplate")
    assert [a["name"] for a in template["spec"]["args"]] == ["service", "namespace", "stage"]
    (metric,) = template["spec"]["metrics"]
    assert metric["failureLimit"] == 0  # one failed Job fails the analysis: Argo aborts and rolls back
    job_spec = metric["provider"]["job"]["spec"]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "gates"}, "spec": job_spec}
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    (container,) = job_spec["template"]["spec"]["containers"]
    assert container["command"][:4] == ["canary-checks", "gates", "--stage", "{{args.stage}}"]
    hold = container["command"][container["command"].index("--hold-for") + 1]
    assert parse_duration(hold) + 30 <= job_spec["activeDeadlineSeconds"]  # it decides before Kubernetes kills it


def test_the_flagger_canary_calls_the_webhooks_serve_answers() -> None:
    from canary_checks.serve import HOOKS

    (canary,) = [o for where, o in objects() if where.startswith("flagger/")]
    assert (canary["apiVersion"], canary["kind"]) == ("flagger.app/v1beta1", "Canary")
    hooks = canary["spec"]["analysis"]["webhooks"]
    assert {h["type"] for h in hooks} == set(HOOKS)
    for hook in hooks:
        assert hook["url"] == f"http://canary-checks.orion/flagger/{hook['type']}"
        assert hook["metadata"]["token"].startswith("REPLACE"), "no real token in a committed manifest"


# ---- a team's own services: `canary-checks manifests render --values` ---------------------------------------------


def test_a_teams_values_render_their_namespace_services_and_images() -> None:
    files = team_files()
    assert {p.split("/")[0] for p in files} == {"cart", "rbac", "checks", "argo", "flagger", "load", "monitoring"}
    assert "flagger/canary-cart.yaml" in files
    objs = [o for _, o in team_objects()]
    for obj in objs:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"] == "canary-checks-dashboard":
            assert obj["metadata"]["namespace"] == "monitoring"  # where the Grafana sidecar looks
        else:
            assert obj["metadata"]["namespace"] == "shop", obj["metadata"]["name"]
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objs}
    for version, image, replicas in (
        ("stable", "registry.example/cart:1.2", 2),
        ("canary", "registry.example/cart:1.3", 1),
    ):
        deployment = by_name[("Deployment", f"cart-{version}")]
        assert deployment["spec"]["replicas"] == replicas
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["image"] == image
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": 3000, "http-metrics": 3001}
        assert container["livenessProbe"]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
        assert container["resources"]["limits"] == {"cpu": "1", "memory": "1Gi"}
        assert {"name": "CART_TTL", "value": "60"} in container["env"]
        assert deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "shop"
        assert by_name[("Service", f"cart-{version}")]["spec"]["selector"] == {"app": "cart", "version": version}
        monitor = by_name[("ServiceMonitor", f"cart-{version}")]
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["shop"]}
    assert by_name[("PodDisruptionBudget", "cart-stable")]["spec"]["minAvailable"] == 1
    vs = by_name[("VirtualService", "cart")]
    assert vs["spec"]["hosts"] == ["cart"] and vs["spec"]["http"][0]["route"][0]["destination"]["host"] == "cart"
    assert by_name[("DestinationRule", "cart")]["spec"]["host"] == "cart"
    assert by_name[("TrafficSplit", "cart")]["spec"]["service"] == "cart"
    assert [p["name"] for p in by_name[("HTTPRoute", "cart")]["spec"]["parentRefs"]] == ["cart"]
    for role in ("canary-checks-runner", "canary-checks"):
        (subject,) = by_name[("RoleBinding", role)]["subjects"]
        assert subject["namespace"] == "shop"
    webhook = by_name[("Deployment", "canary-checks-webhook")]["spec"]["template"]["spec"]["containers"][0]
    assert webhook["image"] == "registry.example/canary-checks:0.1.0"
    hooks = by_name[("Canary", "cart")]["spec"]["analysis"]["webhooks"]
    assert {h["url"].split("/")[2] for h in hooks} == {"canary-checks.shop"}
    master = by_name[("Deployment", "locust-master")]["spec"]["template"]["spec"]["containers"][0]
    assert master["args"][master["args"].index("--host") + 1] == "http://cart.shop.svc.cluster.local"
    # Nothing of the demo: its namespace, services, registry, or a runbook link it did not ask for.
    text = "\n".join(files.values())
    assert not re.search(r"orion|ghcr\.io|\bauth\b|runbook_url", text, re.IGNORECASE)
    names = {o["metadata"]["name"] for o in objs} | {o["metadata"]["labels"].get("app", "") for o in objs}
    assert not names & {"gateway", "user", "auth", "notifications"}


def test_a_teams_argo_job_validates_and_their_alert_rules_pass_promtool(tmp_path: Path) -> None:
    (template,) = [o for where, o in team_objects() if where == "shop:argo/analysis-template.yaml"]
    job_spec = template["spec"]["metrics"][0]["provider"]["job"]["spec"]
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "gates"}, "spec": job_spec}
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    promtool = shutil.which("promtool")
    assert promtool, "promtool comes with the Debian prometheus package; ./dev installs it"
    for name in ("canary-alerts.yaml", "canary-alerts-linkerd.yaml"):
        (rule,) = yaml.safe_load_all(team_files()[f"monitoring/{name}"])
        rules = tmp_path / name
        rules.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
        done = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr


def test_without_a_locustfile_no_locust_is_written() -> None:
    assert not [p for p in render_all(team_values()) if p.startswith("load/")]


def test_flags_win_over_the_values_file(tmp_path: Path) -> None:
    from canary_checks.manifests import load_values

    (tmp_path / "values.yaml").write_text(TEAM_VALUES + "load: {locustfile: locust/cart.py}\n")
    values = load_values(
        tmp_path / "values.yaml", namespace="shop-staging", services=[("cart", "registry.example/cart:1.4"),
                                                                      ("web", "registry.example/web:7")]
    )  # fmt: skip
    assert values.namespace == "shop-staging"
    assert [(s.name, s.image, s.port) for s in values.services] == [
        ("cart", "registry.example/cart:1.4", 3000),  # the file's other keys stay
        ("web", "registry.example/web:7", 8080),
    ]
    assert values.load.locustfile == tmp_path / "locust" / "cart.py"  # relative to the values file
    only_flags = load_values(namespace="shop", services=[("cart", "registry.example/cart:1.2")])
    assert only_flags.services[0].canary_image is None and only_flags.checks_image == "canary-checks:0.1.0"
    assert load_values() is DEMO


@pytest.mark.parametrize(
    ("text", "flags", "expected"),
    [
        ("namespace: shop\nservices: [{name: Cart, image: r/cart:1}]\n", {},
         "services[0] (Cart).name: 'Cart' is not a usable service name"),
        ("namespace: shop\nservices: [{name: cart}]\n", {}, "services[0] (cart).image: Field required"),
        ("namespace: shop\nservices: [{name: cart, imgae: r/cart:1, image: r/cart:1}]\n", {},
         "services[0] (cart).imgae: unknown key (check its spelling)"),
        ("namespace: shop\nservices: [{name: cart, image: r/cart:1, cpu_limit: 1core}]\n", {},
         "services[0] (cart).cpu_limit: '1core' is not a Kubernetes quantity"),
        ("namespace: shop\nservices: [{name: cart, image: r/cart:1, port: 9090}]\n", {},
         "services[0] (cart): port and metrics_port are both 9090"),
        ("namespace: shop\nservices: [{name: cart, image: r/a:1}, {name: cart, image: r/b:1}]\n", {},
         "service 'cart' is listed twice"),
        ("namespace: Shop_1\nservices: [{name: cart, image: r/cart:1}]\n", {},
         "namespace: 'Shop_1' is not a valid Kubernetes namespace"),
        ("services: [{name: cart, image: r/cart:1}]\n", {},
         "namespace missing\n  fix: add `namespace:` to the values file or pass --namespace NS"),
        ("namespace: shop\n", {"namespace": "shop2"},
         "services missing\n  fix: add `services:` to the values file or pass --service NAME=IMAGE"),
        ("namespace: shop\nservices: [{name: cart, image: 'r/cart:1 --debug'}]\n", {},
         "services[0] (cart).image: 'r/cart:1 --debug' is not an image reference"),
        ("- cart\n", {}, "expected a mapping with at least `namespace:` and `services:`"),
        ("namespace: shop\nservices: {cart: r/cart:1}\n", {"services": [("web", "r/web:1")]},
         "services: Input should be a valid list"),
    ],
)  # fmt: skip
def test_bad_values_are_one_clear_error_naming_the_key(
    tmp_path: Path, text: str, flags: dict[str, str], expected: str
) -> None:
    from canary_checks.errors import ConfigError
    from canary_checks.manifests import load_values

    (tmp_path / "values.yaml").write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_values(tmp_path / "values.yaml", **flags)  # type: ignore[arg-type]
    assert expected in caught.value.message
    assert caught.value.message.startswith(str(tmp_path / "values.yaml"))
    assert "fix: " in caught.value.message


def render(*args: str, cwd: Path, process: bool = True) -> subprocess.CompletedProcess[str]:
    """``canary-checks manifests render``: a process of its own, or (not ``process``) in this one."""
    if not process:
        return canary_checks_here("manifests", "render", *args, cwd=cwd)
    return subprocess.run(
        [sys.executable, "-m", "canary_checks", "manifests", "render", *args],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_renders_a_teams_services_from_flags_in_any_directory(tmp_path: Path) -> None:
    done = render("--namespace", "shop", "--service", "cart=registry.example/cart:1.2", "--out", "k8s", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no locustfile: load/locust.yaml not written" in done.stdout
    assert "checks/ and argo/ run the image canary-checks:0.1.0: build docker/checks.Dockerfile" in done.stdout
    assert sorted(p.name for p in (tmp_path / "k8s").iterdir()) == [
        "argo", "cart", "checks", "flagger", "monitoring", "rbac"
    ]  # fmt: skip
    stable = next(
        o for o in yaml.safe_load_all((tmp_path / "k8s" / "cart" / "base.yaml").read_text())
        if o["metadata"]["name"] == "cart-stable"
    )  # fmt: skip
    assert stable["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/cart:1.2"


def test_the_commands_errors_and_help(tmp_path: Path) -> None:
    (tmp_path / "values.yaml").write_text("namespace: shop\nservices: [{name: cart, image: r/cart:1, port: 0}]\n")
    bad = render("--values", "values.yaml", cwd=tmp_path, process=False)
    assert bad.returncode == 2
    assert "error: values.yaml: services[0] (cart).port: Input should be greater than or equal to 1" in bad.stderr
    assert "fix: " in bad.stderr and "Traceback" not in bad.stderr
    flag = render("--namespace", "shop", "--service", "cart", cwd=tmp_path, process=False)
    assert flag.returncode == 2 and "expected NAME=IMAGE" in flag.stderr and "Traceback" not in flag.stderr
    assert not (tmp_path / "manifests").exists(), "nothing is written on bad input"
    help_text = render("--help", cwd=tmp_path, process=False).stdout
    for shown in ("--values", "--service NAME=IMAGE", "namespace: shop", "image: registry.example/cart:1.2"):
        assert shown in help_text, shown


def test_every_values_key_is_documented_and_the_readmes_example_renders(tmp_path: Path) -> None:
    from canary_checks.manifests import load_values, values_table

    readme = (MANIFESTS / "README.md").read_text()
    assert values_table() in readme, "manifests/README.md's values table is stale: paste values_table()"
    example = re.search(r"```yaml\n(namespace: shop\n.*?)```", readme, re.DOTALL)
    assert example
    (tmp_path / "values.yaml").write_text(example.group(1))
    values = load_values(tmp_path / "values.yaml")
    assert [s.name for s in values.services] == ["cart", "checkout"]
    assert (
        "runbook_url: https://wiki.example/canary-runbook#canaryhigherrorrate"
        in render_all(values)["monitoring/canary-alerts.yaml"]
    )
