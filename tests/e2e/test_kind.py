"""Opt-in, on a real cluster (pytest --with-kind): kind in Docker, the demo image, the repo's manifests.

Nothing here runs without Docker; CI and the sandbox machines skip it with the reason."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary_checks.kube import KubePlatform, api_client, canary_health
from canary_checks.suite import packaged

pytestmark = pytest.mark.kind
REPO = Path(__file__).parents[2]
IMAGE = "canary-checks-demo:e2e"


def test_the_demo_deploys_from_our_manifests_and_the_kube_gates_read_it(kind_cluster: Any, tmp_path: Path) -> None:
    subprocess.run(["docker", "build", "-t", IMAGE, "-f", "docker/demo.Dockerfile", "."], cwd=REPO, check=True)
    kind_cluster.load_docker_image(IMAGE)
    kind_cluster.kubectl("create", "namespace", "orion")
    objects = list(yaml.safe_load_all((REPO / "manifests" / "auth" / "base.yaml").read_text()))
    for obj in objects:
        if obj["kind"] == "Deployment":
            obj["spec"]["template"]["spec"]["containers"][0]["image"] = IMAGE
    manifest = tmp_path / "auth.yaml"
    manifest.write_text(
        yaml.safe_dump_all([o for o in objects if o["kind"] in ("ServiceAccount", "Deployment", "Service")])
    )
    kind_cluster.kubectl("apply", "-f", str(manifest))
    kind_cluster.kubectl("-n", "orion", "rollout", "status", "deployment/auth-canary", "--timeout=180s")

    os.environ["KUBECONFIG"] = str(kind_cluster.kubeconfig_path)
    api = api_client()
    health = canary_health(api, "orion", "auth-canary")
    assert health.ready == health.desired == 1 and health.restarts == 0

    platform = KubePlatform(api, "orion", "auth-stable", "auth-canary")
    platform.deploy_canary(IMAGE)  # the same image again: a no-op rollout the real controller completes
    platform.wait_canary_ready(180, print)

    config = tmp_path / "canary.yaml"
    config.write_text(yaml.safe_dump({"kubernetes": {"enabled": True}, "prometheus": {"url": "http://127.0.0.1:9"}}))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", str(packaged("gate")), "--stage", "25", "-k", "kubernetes", "--canary-config",
         str(config), "-p", "no:cacheprovider"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    assert "5 passed" in done.stdout
