"""The Helm chart, checked by the real Helm binary (tests/helm_tool.py), the Kubernetes JSON
schemas (kubernetes-validate) and codeQ's own settings loader.

Every variant in ``helm/codeq/ci/`` is linted and rendered once per session; test-only values
(distinctive secrets, values the schema must refuse) live in ``tests/helm_values/``.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from codeq.auth import AuthConfigError, JwksAuthenticator, build_auth
from codeq.settings import MASK, Settings
from deliverers.proxy import ProxyTransport, webhook_transport
from tests.helm_tool import RELEASE, helm_binary, helm_template

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "helm" / "codeq"
TEST_VALUES = Path(__file__).resolve().parent / "helm_values"
VARIANTS = sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml"))
ALL = [None, *VARIANTS]  # None: the chart's default values
# The oldest Kubernetes minor still supported upstream, and the newest the package ships.
K8S_VERSIONS = ("1.31.0", kubernetes_validate.latest_version())

Doc = dict[str, Any]
SECRET_VALUES = yaml.safe_load((TEST_VALUES / "secrets.yaml").read_text())["secrets"]
# Strings that must never leave the Secret (the auth configs are secret as a whole; their
# audiences make them recognisable).
DISTINCTIVE = [
    SECRET_VALUES["webhookHmacSecret"],
    SECRET_VALUES["redisPassword"],
    SECRET_VALUES["producerAuthConfig"]["audience"],
    SECRET_VALUES["workerAuthConfig"]["audience"],
]
CODEQ = Path(sys.executable).parent / "codeq"


# ---------------------------------------------------------------------------------- helpers


@functools.cache
def helm() -> str:
    return helm_binary()


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([helm(), *args], capture_output=True, text=True, timeout=120)


def variant_args(variant: str | None) -> list[str]:
    return ["-f", str(CHART / "ci" / f"{variant}-values.yaml")] if variant else []


@functools.cache
def render(variant: str | None, *extra: str) -> list[Doc]:
    """The manifests of ``helm template`` (cached: tests only read them)."""
    return helm_template(CHART, *variant_args(variant), *extra)


def render_with_secrets(variant: str | None) -> list[Doc]:
    return render(variant, "-f", str(TEST_VALUES / "secrets.yaml"))


def values_of(variant: str | None) -> Doc:
    if variant is None:
        return {}
    loaded: Doc = yaml.safe_load((CHART / "ci" / f"{variant}-values.yaml").read_text())
    return loaded


def of_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d["kind"] == kind]


def named(docs: list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def full(suffix: str) -> str:
    return f"{RELEASE}-codeq-{suffix}" if suffix else f"{RELEASE}-codeq"


def pod_spec(workload: Doc) -> Doc:
    spec: Doc = workload["spec"]["template"]["spec"]
    return spec


def pod_labels(workload: Doc) -> Doc:
    labels: Doc = workload["spec"]["template"]["metadata"]["labels"]
    return labels


def container(workload: Doc) -> Doc:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    first: Doc = containers[0]
    return first


def secret_env(secret: Doc) -> dict[str, str]:
    env = dict(secret.get("stringData") or {})
    env |= {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}
    return env


def matches(match_labels: Doc, labels: Doc) -> bool:
    return bool(match_labels) and all(labels.get(k) == v for k, v in match_labels.items())


# ------------------------------------------------------------------------- lint and schemas


def test_the_documented_variants_exist() -> None:
    assert set(VARIANTS) == {
        "cluster",
        "existing-secret",
        "external-redis",
        "hpa",
        "ingress",
        "metrics-port",
        "networkpolicy",
        "servicemonitor",
    }


@pytest.mark.parametrize("variant", ALL)
def test_helm_lint_passes(variant: str | None) -> None:
    done = run_helm("lint", str(CHART), "--strict", *variant_args(variant))
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("variant", ALL)
def test_every_manifest_validates_against_the_kubernetes_schemas(variant: str | None) -> None:
    docs = render_with_secrets(variant)
    assert len(docs) >= 6
    for doc in docs:
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            check_service_monitor(doc, docs)
            continue
        for version in K8S_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                name = f"{doc['kind']} {doc['metadata']['name']}"
                raise AssertionError(f"{name} (Kubernetes {version}): {exc.message}") from None


def check_service_monitor(doc: Doc, docs: list[Doc]) -> None:
    """A Prometheus Operator CRD, not in the Kubernetes schemas: its shape, and that it points
    at a port the gateway Service has."""
    assert doc["kind"] == "ServiceMonitor"
    assert doc["metadata"]["name"]
    service = named(docs, "Service", full(""))
    assert matches(doc["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    endpoints = doc["spec"]["endpoints"]
    assert isinstance(endpoints, list) and endpoints
    port_names = {p["name"] for p in service["spec"]["ports"]}
    for endpoint in endpoints:
        assert endpoint["path"] == "/metrics"
        assert endpoint["port"] in port_names
        assert re.fullmatch(r"\d+[smh]", endpoint["interval"])


@pytest.mark.parametrize(
    ("values_file", "named_in_error"),
    [
        ("wrong-type.yaml", "replicas"),
        ("secret-in-config.yaml", "webhookHmacSecret"),
        ("password-in-redis-url.yaml", "redisUrl"),
        ("unknown-key.yaml", "gatway"),
    ],
)
def test_the_values_schema_rejects(values_file: str, named_in_error: str) -> None:
    bad = str(TEST_VALUES / values_file)
    rendered = run_helm("template", RELEASE, str(CHART), "-f", bad)
    assert rendered.returncode != 0, f"{values_file} rendered"
    assert named_in_error in rendered.stderr
    linted = run_helm("lint", str(CHART), "-f", bad)
    assert linted.returncode != 0, f"{values_file} linted"


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("externalRedis.addr=redis.data:6379", "set kvrocks.enabled=false"),
        ("config.redisCluster=true", "the in-chart KVRocks is one node"),
        ("kvrocks.enabled=false", "externalRedis.addr is required"),
    ],
)
def test_contradictory_store_settings_fail_to_render(setting: str, message: str) -> None:
    done = run_helm("template", RELEASE, str(CHART), "--set", setting)
    assert done.returncode != 0
    assert message in done.stderr


# -------------------------------------------------------------------------------- variants


def test_variants_render_what_they_switch_on() -> None:
    default = render(None)
    assert not of_kind(default, "Ingress")
    assert not of_kind(default, "HorizontalPodAutoscaler")
    assert not of_kind(default, "ServiceMonitor")
    assert not of_kind(default, "NetworkPolicy")

    ingress = named(render("ingress"), "Ingress", full(""))
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": full(""), "port": {"name": "http"}}
    service = named(render("ingress"), "Service", full(""))
    assert "http" in {p["name"] for p in service["spec"]["ports"]}
    assert ingress["spec"]["tls"][0]["secretName"] == "queue-example-com-tls"

    hpa_docs = render("hpa")
    hpas = of_kind(hpa_docs, "HorizontalPodAutoscaler")
    assert sorted(h["spec"]["scaleTargetRef"]["name"] for h in hpas) == [
        full("deliverer"),
        full("gateway"),
    ]
    assert all(h["apiVersion"] == "autoscaling/v2" for h in hpas)
    # The HPA owns the replica count: the Deployments must not fight it on each upgrade.
    assert all("replicas" not in d["spec"] for d in of_kind(hpa_docs, "Deployment"))
    assert all("replicas" in d["spec"] for d in of_kind(default, "Deployment"))

    assert of_kind(render("servicemonitor"), "ServiceMonitor")

    policies = {p["metadata"]["name"]: p for p in of_kind(render("networkpolicy"), "NetworkPolicy")}
    assert set(policies) == {full("gateway"), full("deliverer"), full("kvrocks")}
    assert policies[full("deliverer")]["spec"]["ingress"] == []
    # Egress stays open: webhooks go anywhere.
    assert all(p["spec"]["policyTypes"] == ["Ingress"] for p in policies.values())

    for variant in ("external-redis", "existing-secret", "cluster"):
        assert not of_kind(render(variant), "StatefulSet")
    assert of_kind(default, "StatefulSet")

    existing = render("existing-secret")
    assert not of_kind(existing, "Secret")
    for deployment in of_kind(existing, "Deployment"):
        assert container(deployment)["envFrom"] == [{"secretRef": {"name": "codeq-credentials"}}]


def test_network_policies_admit_what_must_get_through() -> None:
    docs = render("networkpolicy")
    gateway_labels = pod_labels(named(docs, "Deployment", full("gateway")))
    deliverer_labels = pod_labels(named(docs, "Deployment", full("deliverer")))
    kvrocks_labels = pod_labels(named(docs, "StatefulSet", full("kvrocks")))

    gateway_policy = named(docs, "NetworkPolicy", full("gateway"))["spec"]
    assert matches(gateway_policy["podSelector"]["matchLabels"], gateway_labels)
    [rule] = gateway_policy["ingress"]
    assert rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert rule["from"] == values_of("networkpolicy")["networkPolicy"]["gatewayFrom"]

    kvrocks_policy = named(docs, "NetworkPolicy", full("kvrocks"))["spec"]
    assert matches(kvrocks_policy["podSelector"]["matchLabels"], kvrocks_labels)
    [rule] = kvrocks_policy["ingress"]
    assert rule["ports"] == [{"port": 6666, "protocol": "TCP"}]
    [peer] = rule["from"]
    selector = peer["podSelector"]

    def admitted(labels: Doc) -> bool:
        ok = matches(selector["matchLabels"], labels)
        for expression in selector.get("matchExpressions", []):
            assert expression["operator"] == "In"
            ok = ok and labels.get(expression["key"]) in expression["values"]
        return ok

    assert admitted(gateway_labels) and admitted(deliverer_labels)
    assert not admitted({**gateway_labels, "app.kubernetes.io/instance": "other"})
    assert not admitted({"app": "something-else"})


def test_metrics_on_their_own_port() -> None:
    docs = render("metrics-port")
    gateway = container(named(docs, "Deployment", full("gateway")))
    assert {"name": "metrics", "containerPort": 9090, "protocol": "TCP"} in gateway["ports"]
    service_ports = {p["name"]: p for p in named(docs, "Service", full(""))["spec"]["ports"]}
    assert service_ports["metrics"]["port"] == 9090
    [monitor] = of_kind(docs, "ServiceMonitor")
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    ingress = named(docs, "NetworkPolicy", full("gateway"))["spec"]["ingress"]
    metrics_rule = next(r for r in ingress if r["ports"][0]["port"] == 9090)
    assert metrics_rule["from"] == values_of("metrics-port")["networkPolicy"]["metricsFrom"]
    config = yaml.safe_load(named(docs, "ConfigMap", full("config"))["data"]["config.yaml"])
    assert config["metricsPort"] == 9090


# ------------------------------------------------------------------- processes and security


@pytest.mark.parametrize("variant", ALL)
def test_processes_probes_and_security(variant: str | None) -> None:
    docs = render_with_secrets(variant)
    gateway_deployment = named(docs, "Deployment", full("gateway"))
    deliverer_deployment = named(docs, "Deployment", full("deliverer"))
    gateway, deliverer = container(gateway_deployment), container(deliverer_deployment)
    # No `command`: the image's ENTRYPOINT ["codeq"] runs `codeq gateway` / `codeq deliver`.
    assert "command" not in gateway and "command" not in deliverer
    assert gateway["args"] == ["gateway", "--host", "0.0.0.0", "--port", "8080"]
    assert deliverer["args"] == ["deliver"]
    assert gateway["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert gateway["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in gateway["ports"]

    config_map = named(docs, "ConfigMap", full("config"))
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    for deployment in (gateway_deployment, deliverer_deployment):
        pod, c, labels = pod_spec(deployment), container(deployment), pod_labels(deployment)
        assert matches(deployment["spec"]["selector"]["matchLabels"], labels)
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == 10001
        assert pod["securityContext"]["fsGroup"] == 10001
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        assert c["securityContext"]["readOnlyRootFilesystem"] is True
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
        [spread] = pod["topologySpreadConstraints"]
        assert matches(spread["labelSelector"]["matchLabels"], labels)
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert re.fullmatch(r"[0-9a-f]{64}", annotations["checksum/config"])
        assert pod["terminationGracePeriodSeconds"] >= config["shutdownGraceSeconds"] + 5

        # What the settings loader reads: the ConfigMap's config.yaml at CODEQ_CONFIG_PATH.
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
        env = {e["name"]: e.get("value") for e in c["env"]}
        config_path = Path(env["CODEQ_CONFIG_PATH"])
        mount = mounts[str(config_path.parent)]
        assert volumes[mount["name"]]["configMap"]["name"] == config_map["metadata"]["name"]
        assert config_path.name in config_map["data"]
        # The root filesystem is read-only: /tmp and the artifacts directory are emptyDirs.
        for path in ("/tmp", config["localArtifactsDir"]):
            assert "emptyDir" in volumes[mounts[path]["name"]], path

    assert gateway["env"] == deliverer["env"] and gateway["envFrom"] == deliverer["envFrom"]

    budgets = {p["metadata"]["name"]: p for p in of_kind(docs, "PodDisruptionBudget")}
    assert set(budgets) == {full("gateway"), full("deliverer")}
    for name, budget in budgets.items():
        assert budget["apiVersion"] == "policy/v1"
        labels = pod_labels(named(docs, "Deployment", name))
        assert matches(budget["spec"]["selector"]["matchLabels"], labels)

    service = named(docs, "Service", full(""))
    assert matches(service["spec"]["selector"], pod_labels(gateway_deployment))
    assert not matches(service["spec"]["selector"], pod_labels(deliverer_deployment))
    container_ports = {p["name"] for p in gateway["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= container_ports


def test_artifacts_on_a_shared_claim() -> None:
    docs = render(None, "--set", "artifacts.existingClaim=codeq-artifacts")
    config = yaml.safe_load(named(docs, "ConfigMap", full("config"))["data"]["config.yaml"])
    for deployment in of_kind(docs, "Deployment"):
        mount = next(
            m
            for m in container(deployment)["volumeMounts"]
            if m["mountPath"] == config["localArtifactsDir"]
        )
        [volume] = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
        assert volume["persistentVolumeClaim"] == {"claimName": "codeq-artifacts"}


def test_a_config_change_rolls_the_pods() -> None:
    def checksum(docs: list[Doc]) -> str:
        deployment = named(docs, "Deployment", full("gateway"))
        value: str = deployment["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        return value

    assert checksum(render(None)) == checksum(render(None, "--set", "gateway.replicas=3"))
    assert checksum(render(None)) != checksum(render(None, "--set", "config.logLevel=debug"))


def test_the_in_chart_kvrocks() -> None:
    docs = render(None)
    kvrocks = named(docs, "StatefulSet", full("kvrocks"))
    c = container(kvrocks)
    image, tag = c["image"].rsplit(":", 1)
    assert image == "apache/kvrocks"
    # The release the suite runs (tests/test_kvrocks_durability.py checks it is the tested
    # binary's); 2.10.1 is also the first with every consumer-group command codeQ uses.
    assert tag == "2.10.1"
    # The image's entrypoint names a pid file on the (read-only) root filesystem.
    assert c["command"] == ["kvrocks"]
    assert c["args"][:2] == ["-c", "/etc/kvrocks/kvrocks.conf"]
    assert c["livenessProbe"]["tcpSocket"] == {"port": "kvrocks"}
    assert "-p 6666 ping" in " ".join(c["readinessProbe"]["exec"]["command"])
    assert {"name": "kvrocks", "containerPort": 6666, "protocol": "TCP"} in c["ports"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod_spec(kvrocks)["securityContext"]["runAsNonRoot"] is True

    [claim] = kvrocks["spec"]["volumeClaimTemplates"]
    data_mount = next(m for m in c["volumeMounts"] if m["name"] == claim["metadata"]["name"])
    conf = named(docs, "ConfigMap", full("kvrocks"))["data"]["kvrocks.conf"]
    lines = set(conf.splitlines())
    assert f"dir {data_mount['mountPath']}" in lines
    assert "port 6666" in lines
    # Durable writes (docs/deploy.md, Durability): the WAL, fsynced before each reply.
    assert {"rocksdb.write_options.sync yes", "rocksdb.write_options.disable_wal no"} <= lines
    # RESP2 (the store client's protocol) is kvrocks' default: nothing may turn RESP3 on.
    assert not any(line.startswith("resp3-enabled") for line in lines)
    # Not in 2.10.1 (it would only warn): off unless asked for, with a newer image.
    assert not any(line.startswith("lua-strict-key-accessing") for line in lines)
    strict = render(None, "--set", "kvrocks.luaStrictKeyAccessing=true")
    strict_conf = named(strict, "ConfigMap", full("kvrocks"))["data"]["kvrocks.conf"]
    assert "lua-strict-key-accessing yes" in strict_conf.splitlines()
    assert f"backup-dir {data_mount['mountPath']}/backup" in lines  # on the volume, not /tmp

    service = named(docs, "Service", full("kvrocks"))
    assert service["spec"]["clusterIP"] == "None"
    assert kvrocks["spec"]["serviceName"] == service["metadata"]["name"]
    assert matches(service["spec"]["selector"], pod_labels(kvrocks))
    config = yaml.safe_load(named(docs, "ConfigMap", full("config"))["data"]["config.yaml"])
    assert config["redisAddr"] == f"{service['metadata']['name']}:6666"

    # requirepass: the Secret's REDIS_PASSWORD, which the codeQ pods get too.
    secret = named(docs, "Secret", full("secrets"))
    assert len(secret_env(secret)["REDIS_PASSWORD"]) >= 32
    assert c["args"][2:] == ["--requirepass", "$(REDIS_PASSWORD)"]
    env = {e["name"]: e for e in c["env"]}
    assert env["REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": secret["metadata"]["name"],
        "key": "REDIS_PASSWORD",
    }

    without_auth = render(None, "--set", "kvrocks.auth.enabled=false")
    c = container(named(without_auth, "StatefulSet", full("kvrocks")))
    assert c["args"] == ["-c", "/etc/kvrocks/kvrocks.conf"]
    assert "env" not in c
    assert "REDIS_PASSWORD" not in secret_env(named(without_auth, "Secret", full("secrets")))


PROXY_PASSWORD = "proxy-pw-5c2e91"
PROXY_URL = f"http://egress-user:{PROXY_PASSWORD}@egress.internal:3128"


def test_an_egress_proxy_for_the_webhooks(tmp_path: Path) -> None:
    """``secrets.webhookProxyUrl``: in the Secret only (it may hold credentials), given to both
    workloads, read by the settings loader, and the deliverers' transport goes through it."""
    assert "WEBHOOK_PROXY_URL" not in secret_env(named(render(None), "Secret", full("secrets")))
    docs = render(None, "--set-string", f"secrets.webhookProxyUrl={PROXY_URL}")
    secret = named(docs, "Secret", full("secrets"))
    assert secret_env(secret)["WEBHOOK_PROXY_URL"] == PROXY_URL
    for doc in docs:
        if doc["kind"] != "Secret":
            assert PROXY_PASSWORD not in json.dumps(doc), f"{doc['kind']} {doc['metadata']['name']}"
    for deployment in of_kind(docs, "Deployment"):
        assert container(deployment)["envFrom"] == [
            {"secretRef": {"name": secret["metadata"]["name"]}}
        ]

    config_file = tmp_path / "config.yaml"
    config_file.write_text(named(docs, "ConfigMap", full("config"))["data"]["config.yaml"])
    pod_env = pod_environment(docs, None)
    done = run_config_show(config_file, pod_env)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)["webhookProxyUrl"]
    assert shown == "http://***@egress.internal:3128"  # the whole user info, never a part
    assert PROXY_PASSWORD not in done.stdout + done.stderr
    settings = Settings.load(
        config_file, environ={**pod_env, "CODEQ_CONFIG_PATH": str(config_file)}
    )
    transport = webhook_transport(settings)
    assert isinstance(transport, ProxyTransport)
    assert (transport.proxy.host, transport.proxy.port) == ("egress.internal", 3128)


@pytest.mark.parametrize(
    "setting",
    [
        "config.webhookProxyUrl=http://egress.internal:3128",  # in the ConfigMap: refused
        "secrets.webhookProxyUrl=https://egress.internal:3128",
        "secrets.webhookProxyUrl=http://egress.internal",
        "secrets.webhookProxyUrl=egress.internal:3128",
    ],
)
def test_the_values_schema_rejects_a_proxy_url(setting: str) -> None:
    for command in ("template", "lint"):
        args = [RELEASE] if command == "template" else []
        done = run_helm(command, *args, str(CHART), "--set-string", setting)
        assert done.returncode != 0, f"{setting} passed helm {command}"
        assert "webhookProxyUrl" in done.stdout + done.stderr


def test_generated_secrets_when_none_are_given() -> None:
    secret = secret_env(named(render(None), "Secret", full("secrets")))
    assert secret["WEBHOOK_HMAC_SECRET"].startswith("whsec_")
    assert len(base64.b64decode(secret["WEBHOOK_HMAC_SECRET"].removeprefix("whsec_"))) >= 32
    # No auth material is invented: env prod then refuses to start (see the last test).
    assert "PRODUCER_AUTH_CONFIG" not in secret
    assert "WORKER_AUTH_CONFIG" not in secret


# ------------------------------------------------------------------------------- secrets


@pytest.mark.parametrize("variant", ALL)
def test_no_secret_value_outside_the_secret(variant: str | None) -> None:
    docs = render_with_secrets(variant)
    assert of_kind(docs, "ConfigMap")
    generated: list[str] = []
    secrets = of_kind(docs, "Secret")
    if variant == "existing-secret":
        assert not secrets
    else:
        [secret] = secrets
        stored = json.dumps(secret_env(secret))
        # The search below is not vacuous: the values are there, in the Secret.
        for value in DISTINCTIVE:
            assert value in stored
        generated = list(secret_env(secret).values())
    for doc in docs:
        if doc["kind"] == "Secret":
            continue
        text = json.dumps(doc)
        for value in [*DISTINCTIVE, *generated]:
            where = f"{doc['kind']} {doc['metadata']['name']}"
            assert value not in text, f"a secret value is in {where}"


def pod_environment(docs: list[Doc], variant: str | None) -> dict[str, str]:
    """The variables a codeQ container gets: its ``env`` and the Secret behind ``envFrom``."""
    gateway = container(named(docs, "Deployment", full("gateway")))
    env: dict[str, str] = {}
    [source] = gateway["envFrom"]
    secret_name = source["secretRef"]["name"]
    if variant == "existing-secret":
        # The Secret the operator made (docs/deploy.md lists its keys).
        assert secret_name == values_of(variant)["existingSecret"]
        env |= {
            "WEBHOOK_HMAC_SECRET": SECRET_VALUES["webhookHmacSecret"],
            "REDIS_PASSWORD": SECRET_VALUES["redisPassword"],
            "PRODUCER_AUTH_CONFIG": json.dumps(SECRET_VALUES["producerAuthConfig"]),
            "WORKER_AUTH_CONFIG": json.dumps(SECRET_VALUES["workerAuthConfig"]),
        }
    else:
        env |= secret_env(named(docs, "Secret", secret_name))
    for item in gateway["env"]:
        env[item["name"]] = item["value"]
    return env


def run_config_show(config_file: Path, pod_env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``codeq config show --config F`` with the pod's variables only (plus PATH)."""
    assert CODEQ.exists(), f"the codeq console script is missing: {CODEQ}"
    env = {"PATH": os.environ.get("PATH", ""), **pod_env, "CODEQ_CONFIG_PATH": str(config_file)}
    return subprocess.run(
        [str(CODEQ), "config", "show", "--config", str(config_file)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


@pytest.mark.parametrize("variant", ALL)
def test_the_pods_config_is_accepted_by_the_settings_loader(
    variant: str | None, tmp_path: Path
) -> None:
    """Render → the file and environment a pod gets → ``codeq config show`` and the prod
    start-up checks (``build_auth``) accept them."""
    docs = render_with_secrets(variant)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(named(docs, "ConfigMap", full("config"))["data"]["config.yaml"])
    pod_env = pod_environment(docs, variant)
    assert pod_env["CODEQ_CONFIG_PATH"] == "/etc/codeq/config.yaml"

    done = run_config_show(config_file, pod_env)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["env"] == "prod" and shown["host"] == "0.0.0.0" and shown["port"] == 8080
    for key in ("webhookHmacSecret", "producerAuthConfig", "workerAuthConfig", "redisPassword"):
        assert shown[key] == MASK, key
    for value in DISTINCTIVE:
        assert value not in done.stdout + done.stderr
    external = values_of(variant).get("externalRedis", {}).get("addr")
    assert shown["redisAddr"] == (external or f"{full('kvrocks')}:6666")
    config = values_of(variant).get("config", {})
    assert shown["partitions"] == config.get("partitions", 1)
    assert shown["redisCluster"] is config.get("redisCluster", False)
    if variant == "cluster":
        assert shown["partitions"] == 16 and shown["redisCluster"] is True

    # What `codeq gateway` checks before it serves in env prod.
    environ = {**pod_env, "CODEQ_CONFIG_PATH": str(config_file)}
    auth = build_auth(Settings.load(config_file, environ=environ), environ=environ)
    assert not auth.dev_mode
    assert isinstance(auth.producer, JwksAuthenticator)
    assert isinstance(auth.worker, JwksAuthenticator)


def test_default_values_take_the_auth_material_from_the_environment(tmp_path: Path) -> None:
    """The default values carry no auth configs: the settings load, but env prod refuses to
    serve until PRODUCER_AUTH_CONFIG / WORKER_AUTH_CONFIG reach the pods."""
    docs = render(None)
    config_file = tmp_path / "config.yaml"
    config_file.write_text(named(docs, "ConfigMap", full("config"))["data"]["config.yaml"])
    pod_env = pod_environment(docs, None)

    done = run_config_show(config_file, pod_env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["webhookHmacSecret"] == MASK

    environ = {**pod_env, "CODEQ_CONFIG_PATH": str(config_file)}
    with pytest.raises(AuthConfigError, match="producerAuthConfig"):
        build_auth(Settings.load(config_file, environ=environ), environ=environ)

    environ |= {
        "PRODUCER_AUTH_CONFIG": json.dumps(SECRET_VALUES["producerAuthConfig"]),
        "WORKER_AUTH_CONFIG": json.dumps(SECRET_VALUES["workerAuthConfig"]),
    }
    done = run_config_show(config_file, environ)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["producerAuthConfig"] == MASK
    auth = build_auth(Settings.load(config_file, environ=environ), environ=environ)
    assert not auth.dev_mode
