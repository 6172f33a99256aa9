"""The Helm chart, checked by the real Helm binary (tests/helm_tool.py), the Kubernetes JSON
schemas (kubernetes-validate) and codeQ's own settings loader."""

from __future__ import annotations

import base64
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.helm_tool import helm_binary

CHART = Path(__file__).resolve().parent.parent / "helm" / "codeq"
VARIANTS = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
K8S_VERSION = "1.33.0"
# Secret values that must only ever appear in the Secret.
SECRETS = {
    "secrets.webhookHmacSecret": "whsec_c2VjcmV0LWhtYWMtdmFsdWUtZm9yLXRoZS1jaGFydA==",
    "secrets.redisPassword": "redis-pass-3b91c4",
}
AUTH = {"tokens": {"prod-token-a8d2e7": {"sub": "p1", "tenantId": "acme"}}}


@functools.cache
def helm() -> str:
    return helm_binary()


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120)


@functools.cache
def render(variant: str | None, *extra: str) -> list[dict[str, Any]]:
    args = ["template", "rel", str(CHART), "--namespace", "codeq"]
    if variant:
        args += ["-f", str(CHART / "ci" / f"{variant}-values.yaml")]
    done = run_helm(*args, *extra)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    assert len(found) == 1, f"{kind} *{suffix}: {len(found)} found"
    return found[0]


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def test_helm_lint_passes_for_every_variant() -> None:
    for variant in [None, *VARIANTS]:
        args = ["lint", str(CHART), "--strict"]
        if variant:
            args += ["-f", str(CHART / "ci" / f"{variant}-values.yaml")]
        done = run_helm(*args)
        assert done.returncode == 0, f"{variant}: {done.stdout}{done.stderr}"


def test_the_documented_variants_exist() -> None:
    assert set(VARIANTS) == {
        "cluster",
        "existing-secret",
        "external-redis",
        "hpa",
        "ingress",
        "networkpolicy",
        "servicemonitor",
    }


@pytest.mark.parametrize("variant", [None, *VARIANTS])
def test_every_manifest_validates_against_the_kubernetes_schemas(variant: str | None) -> None:
    docs = render(variant)
    assert docs
    for doc in docs:
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            # A CRD: not in the Kubernetes schemas; its shape is checked here.
            assert doc["kind"] == "ServiceMonitor"
            endpoints = doc["spec"]["endpoints"]
            assert endpoints[0]["port"] == "http" and endpoints[0]["path"] == "/metrics"
            continue
        try:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {exc}") from None


def test_variants_render_what_they_switch_on() -> None:
    assert of_kind(render("ingress"), "Ingress")
    hpas = of_kind(render("hpa"), "HorizontalPodAutoscaler")
    assert sorted(h["spec"]["scaleTargetRef"]["name"] for h in hpas) == [
        "rel-codeq-deliverer",
        "rel-codeq-gateway",
    ]
    assert all("replicas" not in d["spec"] for d in of_kind(render("hpa"), "Deployment"))
    assert of_kind(render("servicemonitor"), "ServiceMonitor")
    assert len(of_kind(render("networkpolicy"), "NetworkPolicy")) == 3
    for variant in ("external-redis", "existing-secret", "cluster"):
        assert not of_kind(render(variant), "StatefulSet")
    assert of_kind(render(None), "StatefulSet")
    assert not of_kind(render("existing-secret"), "Secret")
    for deployment in of_kind(render("existing-secret"), "Deployment"):
        refs = container(deployment)["envFrom"]
        assert refs == [{"secretRef": {"name": "codeq-credentials"}}]


def test_processes_probes_and_security() -> None:
    docs = render(None)
    gateway = container(named(docs, "Deployment", "-gateway"))
    deliverer = container(named(docs, "Deployment", "-deliverer"))
    assert gateway["args"][0] == "gateway" and deliverer["args"] == ["deliver"]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for deployment in of_kind(docs, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        c = container(deployment)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert pod["topologySpreadConstraints"]
    kvrocks = named(docs, "StatefulSet", "-kvrocks")
    assert kvrocks["spec"]["volumeClaimTemplates"]
    assert kvrocks["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
    conf = named(docs, "ConfigMap", "-kvrocks")["data"]["kvrocks.conf"]
    assert "lua-strict-key-accessing yes" in conf
    assert len(of_kind(docs, "PodDisruptionBudget")) == 2


def _secret_args() -> list[str]:
    args = [f"--set-string={k}={v}" for k, v in SECRETS.items()]
    args += [
        f"--set-json=secrets.producerAuthConfig={json.dumps(AUTH)}",
        f"--set-json=secrets.workerAuthConfig={json.dumps(AUTH)}",
    ]
    return args


def test_no_secret_value_in_any_configmap() -> None:
    docs = render("external-redis", *_secret_args())
    texts = [yaml.safe_dump(c) for c in of_kind(docs, "ConfigMap")]
    assert texts
    for value in [*SECRETS.values(), "prod-token-a8d2e7"]:
        assert not [t for t in texts if value in t], f"{value[:8]}… is in a ConfigMap"
    secret = named(docs, "Secret", "-secrets")
    assert secret["stringData"]["WEBHOOK_HMAC_SECRET"] == SECRETS["secrets.webhookHmacSecret"]


def test_a_generated_hmac_secret_when_none_is_given() -> None:
    secret = named(render(None), "Secret", "-secrets")
    assert secret["stringData"]["WEBHOOK_HMAC_SECRET"].startswith("whsec_")


@pytest.mark.parametrize("variant", ["external-redis", "cluster"])
def test_the_pods_config_is_accepted_by_the_settings_loader(variant: str, tmp_path: Path) -> None:
    """Render → the files and environment a pod gets → ``codeq config show``."""
    docs = render(variant, *_secret_args())
    config = named(docs, "ConfigMap", "-config")["data"]["config.yaml"]
    path = tmp_path / "config.yaml"
    path.write_text(config)
    secret = named(docs, "Secret", "-secrets")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "CODEQ_"))}
    env |= dict(secret.get("stringData", {}))
    env |= {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}
    gateway = container(named(docs, "Deployment", "-gateway"))
    for item in gateway["env"]:
        env[item["name"]] = item["value"]
    assert env["CODEQ_CONFIG_PATH"] == "/etc/codeq/config.yaml"  # where the ConfigMap is mounted
    env["CODEQ_CONFIG_PATH"] = str(path)
    done = subprocess.run(
        [sys.executable, "-m", "codeq.cli", "config", "show"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["env"] == "prod" and shown["host"] == "0.0.0.0"
    assert shown["webhookHmacSecret"] == "***" and shown["producerAuthConfig"] == "***"
    if variant == "cluster":
        assert shown["partitions"] == 16 and shown["redisCluster"] is True
    assert (
        shown["redisAddr"]
        == yaml.safe_load((CHART / "ci" / f"{variant}-values.yaml").read_text())["externalRedis"][
            "addr"
        ]
    )


def test_the_values_schema_rejects_a_wrong_type(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("gateway:\n  replicas: three\n")
    done = run_helm("template", "rel", str(CHART), "-f", str(bad))
    assert done.returncode != 0
    assert "replicas" in done.stderr
    secret_in_config = tmp_path / "secret-in-config.yaml"
    secret_in_config.write_text("config:\n  webhookHmacSecret: oops\n")
    done = run_helm("lint", str(CHART), "-f", str(secret_in_config))
    assert done.returncode != 0
