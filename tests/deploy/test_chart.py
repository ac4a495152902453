"""The Helm chart (deploy/helm/modgate): lint, render, validate and harden every value set.

Strategy: each value set (defaults + ci/*-values.yaml) is linted (strict) and rendered offline
with helm-python-sdk; every document is validated against the Kubernetes 1.30 schemas
(kubernetes-validate, strict) or, for Prometheus Operator kinds it does not know, checked
structurally. Pod templates are then held to the hardening invariants, and the rendered
settings and routes are fed to modgate's own loaders, so the chart cannot drift from the app.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from proxy.routing.manifest import parse_manifest_text
from proxy.routing.table import compile_module
from proxy.settings import FIELDS, load_settings

try:
    import helm_python
except ImportError as exc:  # pragma: no cover - a broken environment, not a skip
    raise ImportError(
        "tests/deploy/test_chart.py needs the helm-python-sdk package "
        "(.venv/bin/pip install helm-python-sdk)"
    ) from exc
try:
    import kubernetes_validate
except ImportError as exc:  # pragma: no cover
    raise ImportError(
        "tests/deploy/test_chart.py needs the kubernetes-validate package "
        "(.venv/bin/pip install kubernetes-validate)"
    ) from exc

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "modgate"
ALERTS = ROOT / "deploy" / "prometheus" / "modgate-alerts.yaml"
KUBE_VERSION = "1.30"
RELEASE = "modgate"
NAMESPACE = "platform"
SHUTDOWN_GRACE_DEFAULT = 15.0
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
SECRET_SETTINGS = {
    "database_url", "redis_url", "jwt_secret", "jwt_public_key", "executor_token", "secrets_key",
}  # fmt: skip
# Stand-ins for secretKeyRef values, valid for modgate's settings parser.
SECRET_STANDINS = {
    "MODGATE_DATABASE_URL": "postgresql://modgate:secret@db:5432/platform",
    "MODGATE_REDIS_URL": "redis://redis:6379/0",
    "MODGATE_JWT_SECRET": "x" * 32,
}

VALUE_SETS = {"defaults": None} | {
    path.name.removesuffix("-values.yaml"): path for path in sorted(CHART.glob("ci/*-values.yaml"))
}


def _values(name: str) -> dict[str, Any]:
    path = VALUE_SETS[name]
    return {} if path is None else yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def chart() -> helm_python.Chart:
    return helm_python.Chart.load(CHART)


def render(chart: helm_python.Chart, values: dict[str, Any]) -> dict[str, str]:
    return chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)


def documents(rendered: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


@pytest.fixture(scope="module")
def rendered_sets(chart: helm_python.Chart) -> dict[str, list[dict[str, Any]]]:
    return {name: documents(render(chart, _values(name))) for name in VALUE_SETS}


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, got {[d['metadata'] for d in found]}"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for doc in docs:
        if doc["kind"] in {"Deployment", "Job", "StatefulSet", "DaemonSet"}:
            yield doc, doc["spec"]["template"]["spec"]
        elif doc["kind"] == "Pod":
            yield doc, doc["spec"]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


def configmap_data(docs: list[dict[str, Any]], name: str) -> dict[str, str]:
    return one(docs, "ConfigMap", name)["data"]


def test_tools_are_installed() -> None:
    assert hasattr(helm_python, "lint"), "helm-python-sdk: helm_python.lint missing"
    assert hasattr(kubernetes_validate, "validate"), "kubernetes-validate: validate missing"


# -- lint, render, validate: every value set ------------------------------------------------


@pytest.mark.parametrize("name", VALUE_SETS)
def test_lint_strict_is_clean(name: str) -> None:
    report = helm_python.lint(CHART, _values(name), strict=True, namespace=NAMESPACE)
    assert report["errors"] == []
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == [], problems


@pytest.mark.parametrize("name", VALUE_SETS)
def test_every_document_validates(
    rendered_sets: dict[str, list[dict[str, Any]]], name: str
) -> None:
    docs = rendered_sets[name]
    assert docs
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == "monitoring.coreos.com/v1"
            assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}
            assert doc["metadata"]["namespace"] == NAMESPACE
            key = "endpoints" if doc["kind"] == "ServiceMonitor" else "groups"
            assert doc["spec"][key], f"{doc['kind']} without {key}"
            continue
        kubernetes_validate.validate(doc, desired_version=KUBE_VERSION, strict=True)


@pytest.mark.parametrize("name", VALUE_SETS)
def test_names_fit_in_63_characters(chart: helm_python.Chart, name: str) -> None:
    long_release = "a-release-name-that-is-long-enough-to-overflow-object-names-x"
    values = _values(name)
    rendered = chart.render(values, name=long_release, namespace=NAMESPACE, is_install=True)
    for doc in documents(rendered):
        assert len(doc["metadata"]["name"]) <= 63, doc["metadata"]["name"]
        assert not doc["metadata"]["name"].endswith("-")
        for value in doc["metadata"].get("labels", {}).values():
            assert len(str(value)) <= 63


@pytest.mark.parametrize("name", VALUE_SETS)
def test_pods_are_hardened(rendered_sets: dict[str, list[dict[str, Any]]], name: str) -> None:
    pods = list(pod_specs(rendered_sets[name]))
    assert pods
    drain = float(_merged_config(name).get("shutdown_grace_seconds", SHUTDOWN_GRACE_DEFAULT))
    for doc, spec in pods:
        where = f"{name}: {doc['kind']} {doc['metadata']['name']}"
        pod_sc = spec["securityContext"]
        assert pod_sc["runAsNonRoot"] is True, where
        assert pod_sc["runAsUser"] == 10001, where
        assert pod_sc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert spec["automountServiceAccountToken"] is False, where
        assert not spec.get("hostNetwork") and not spec.get("hostPID"), where
        assert {"name": "tmp", "mountPath": "/tmp"} in _mounts(spec), where
        long_running = doc["kind"] != "Job"
        pre_stops = []
        for container in spec["containers"] + spec.get("initContainers", []):
            cwhere = f"{where} container {container['name']}"
            sc = container["securityContext"]
            assert sc["runAsNonRoot"] is True, cwhere
            assert sc["runAsUser"] == 10001, cwhere
            assert sc["readOnlyRootFilesystem"] is True, cwhere
            assert sc["allowPrivilegeEscalation"] is False, cwhere
            assert sc["privileged"] is False, cwhere
            assert sc["capabilities"] == {"drop": ["ALL"]}, cwhere
            assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, cwhere
            assert container["resources"]["requests"]["cpu"], cwhere
            assert container["resources"]["requests"]["memory"], cwhere
            assert container["resources"]["limits"]["memory"], cwhere
            if long_running:
                assert container["livenessProbe"]["httpGet"]["path"], cwhere
                assert container["readinessProbe"]["httpGet"]["path"], cwhere
                command = container["lifecycle"]["preStop"]["exec"]["command"]
                assert command[0] == "sleep", cwhere
                pre_stops.append(float(command[1]))
        if long_running:
            grace = spec["terminationGracePeriodSeconds"]
            assert grace > max(pre_stops) + drain, f"{where}: grace {grace}"
        else:
            assert spec["restartPolicy"] == "Never", where


def _mounts(spec: dict[str, Any]) -> list[dict[str, str]]:
    """The /tmp mounts of every container, normalised to the pod's emptyDir volume name."""
    empty_dirs = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
    mounts = []
    for container in spec["containers"]:
        for mount in container.get("volumeMounts", []):
            if mount["mountPath"] == "/tmp":
                assert mount["name"] in empty_dirs
                mounts.append({"name": "tmp", "mountPath": "/tmp"})
    assert len(mounts) >= 1
    return mounts


def _merged_config(name: str) -> dict[str, Any]:
    config = dict(yaml.safe_load((CHART / "values.yaml").read_text())["config"])
    config.update(_values(name).get("config", {}))
    return config


@pytest.mark.parametrize("name", VALUE_SETS)
def test_rendered_settings_are_accepted_by_modgate(
    rendered_sets: dict[str, list[dict[str, Any]]], name: str, tmp_path: Path
) -> None:
    """Every modgate container's ConfigMap + env loads with modgate's own settings loader."""
    docs = rendered_sets[name]
    configmaps = {cm["metadata"]["name"]: cm["data"] for cm in of_kind(docs, "ConfigMap")}
    checked = 0
    for doc, spec in pod_specs(docs):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            if "modgate/modgate" not in container["image"]:
                continue
            environ: dict[str, str] = {}
            for var, entry in env_of(container).items():
                if "value" in entry:
                    environ[var] = entry["value"]
                elif var in SECRET_STANDINS:
                    environ[var] = SECRET_STANDINS[var]
            config_file = None
            if "MODGATE_CONFIG" in environ:
                mount = next(
                    m for m in container["volumeMounts"] if m["mountPath"] == "/etc/modgate"
                )
                data = configmaps[volumes[mount["name"]]["configMap"]["name"]]
                config_file = tmp_path / f"{doc['metadata']['name']}-{container['name']}.yaml"
                config_file.write_text(data["gateway.yaml"])
                del environ["MODGATE_CONFIG"]
            settings = load_settings(config_path=config_file, environ=environ)
            assert settings.warnings == (), settings.warnings
            if doc["kind"] == "Job":  # `modgate migrate` listens on nothing
                checked += 1
                continue
            for address in (settings.listen, settings.admin_listen, settings.executor_listen):
                assert address.startswith("0.0.0.0:"), address
            checked += 1
    assert checked, f"{name}: no modgate container"


def test_schema_config_keys_are_modgate_settings() -> None:
    schema = yaml.safe_load((CHART / "values.schema.json").read_text())
    config_keys = set(schema["properties"]["config"]["properties"])
    assert config_keys == {field.name for field in FIELDS} - SECRET_SETTINGS


# -- defaults ---------------------------------------------------------------------------------


def test_defaults_render_an_embedded_gateway(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered_sets["defaults"]
    assert sorted(d["kind"] for d in docs) == ["ConfigMap", "Deployment", "Service"]
    deployment = one(docs, "Deployment", "modgate-gateway")
    assert deployment["spec"]["replicas"] == 2
    template = deployment["spec"]["template"]
    annotations = template["metadata"]["annotations"]
    assert {"checksum/config", "checksum/secret", "checksum/routes"} <= set(annotations)
    (container,) = template["spec"]["containers"]
    assert container["image"] == "ghcr.io/modgate/modgate:0.1.0"
    assert container["args"] == ["serve"]
    env = env_of(container)
    assert env["MODGATE_CONFIG"]["value"] == "/etc/modgate/gateway.yaml"
    assert "MODGATE_EXECUTOR_URL" not in env and "MODGATE_DATABASE_URL" not in env
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "admin"}
    service = one(docs, "Service", "modgate-gateway")
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    config = yaml.safe_load(configmap_data(docs, "modgate-config")["gateway.yaml"])
    assert config["log_format"] == "json"


def test_config_change_rolls_the_pods(chart: helm_python.Chart) -> None:
    def checksum(values: dict[str, Any]) -> str:
        docs = documents(render(chart, values))
        template = one(docs, "Deployment", "modgate-gateway")["spec"]["template"]
        return template["metadata"]["annotations"]["checksum/config"]

    assert checksum({}) != checksum({"config": {"log_level": "debug"}})


# -- value sets -------------------------------------------------------------------------------


def test_ha_set(rendered_sets: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered_sets["ha"]
    deployment = one(docs, "Deployment", "modgate-gateway")
    assert "replicas" not in deployment["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler", "modgate-gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "modgate-gateway"
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    pdb = one(docs, "PodDisruptionBudget", "modgate-gateway")
    assert pdb["spec"]["minAvailable"] == 2
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert len(spread) == 2
    assert all(c["labelSelector"]["matchLabels"] == selector for c in spread)
    job = one(docs, "Job", "modgate-migrations")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "hook-succeeded" in job["metadata"]["annotations"]["helm.sh/hook-delete-policy"]
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    assert migrate["args"] == ["migrate"]
    ref = env_of(migrate)["MODGATE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    hook_secret = one(docs, "Secret", ref["name"])
    assert hook_secret["metadata"]["annotations"]["helm.sh/hook-weight"] == "-10"
    assert ref["key"] in hook_secret["data"]


def test_executor_set(rendered_sets: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered_sets["executor"]
    executor = one(docs, "Deployment", "modgate-executor")
    (container,) = executor["spec"]["template"]["spec"]["containers"]
    assert container["args"] == ["executor"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert [p["containerPort"] for p in container["ports"]] == [8090]
    service = one(docs, "Service", "modgate-executor")
    assert service["spec"]["ports"][0]["port"] == 8090
    gateway = one(docs, "Deployment", "modgate-gateway")["spec"]["template"]["spec"]
    gateway_env = env_of(gateway["containers"][0])
    assert gateway_env["MODGATE_EXECUTOR_URL"]["value"] == "http://modgate-executor:8090"
    # Both sides get the shared token from the same Secret key.
    executor_env = env_of(container)
    token = gateway_env["MODGATE_EXECUTOR_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert executor_env["MODGATE_EXECUTOR_TOKEN"]["valueFrom"]["secretKeyRef"] == token

    policy = one(docs, "NetworkPolicy", "modgate-executor")["spec"]
    gateway_labels = gateway_selector(docs)
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "executor"
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    for rule in policy["ingress"]:
        assert [p["port"] for p in rule["ports"]] == [8090]
        for peer in rule["from"]:
            if "namespaceSelector" in peer:  # Prometheus, for /metrics on the same port
                assert peer["namespaceSelector"]["matchLabels"] == {
                    "kubernetes.io/metadata.name": "monitoring"
                }
            else:
                assert peer == {"podSelector": {"matchLabels": gateway_labels}}
    postgres, dns = policy["egress"]
    assert postgres == {
        "to": [{"ipBlock": {"cidr": "10.20.0.5/32"}}],
        "ports": [{"port": 5432, "protocol": "TCP"}],
    }
    assert {p["port"] for p in dns["ports"]} == {53}

    # Routes ConfigMap: mounted, pointed at, and compiled by modgate itself.
    env = env_of(gateway["containers"][0])
    assert env["MODGATE_ROUTES_FILE"]["value"] == "/etc/modgate/routes/routes.yaml"
    manifest = parse_manifest_text(configmap_data(docs, "modgate-routes")["routes.yaml"])
    for module in manifest.modules:
        compile_module(module)


def test_executor_ingress_only_gateway_without_prometheus(chart: helm_python.Chart) -> None:
    values = _values("executor")
    values["networkPolicy"]["executor"] = {"allowPrometheus": False}
    docs = documents(render(chart, values))
    (rule,) = one(docs, "NetworkPolicy", "modgate-executor")["spec"]["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": gateway_selector(docs)}}]


def test_executor_network_policy_needs_postgres_cidrs(chart: helm_python.Chart) -> None:
    values = _values("executor")
    values["networkPolicy"]["postgres"]["cidrs"] = []
    with pytest.raises(helm_python.HelmError, match=r"networkPolicy\.postgres\.cidrs"):
        render(chart, values)


def gateway_selector(docs: list[dict[str, Any]]) -> dict[str, str]:
    return one(docs, "Deployment", "modgate-gateway")["spec"]["selector"]["matchLabels"]


def test_external_secrets_set(rendered_sets: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered_sets["external-secrets"]
    assert of_kind(docs, "Secret") == []
    gateway = one(docs, "Deployment", "modgate-gateway")["spec"]["template"]["spec"]
    env = env_of(gateway["containers"][0])
    expected = {
        "MODGATE_DATABASE_URL": {"name": "modgate-postgres", "key": "dsn"},
        "MODGATE_REDIS_URL": {"name": "modgate-redis", "key": "url"},
        "MODGATE_JWT_SECRET": {"name": "modgate-jwt", "key": "hs256"},
        "MODGATE_JWT_PUBLIC_KEY": {"name": "modgate-jwt", "key": "public.pem"},
    }
    for var, ref in expected.items():
        assert env[var] == {"name": var, "valueFrom": {"secretKeyRef": ref}}
    executor = one(docs, "Deployment", "modgate-executor")["spec"]["template"]["spec"]
    executor_env = env_of(executor["containers"][0])
    assert executor_env["MODGATE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == (
        "modgate-postgres"
    )
    assert "MODGATE_JWT_SECRET" not in executor_env
    job = one(docs, "Job", "modgate-migrations")["spec"]["template"]["spec"]
    migrate_env = env_of(job["containers"][0])
    assert (
        migrate_env["MODGATE_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        == expected["MODGATE_DATABASE_URL"]
    )


def test_monitoring_set(rendered_sets: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered_sets["monitoring"]
    monitors = {d["metadata"]["name"]: d for d in of_kind(docs, "ServiceMonitor")}
    assert set(monitors) == {"modgate-gateway", "modgate-executor"}
    assert monitors["modgate-gateway"]["spec"]["endpoints"][0]["port"] == "admin"
    assert monitors["modgate-executor"]["spec"]["endpoints"][0]["port"] == "http"
    for monitor in monitors.values():
        assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
        assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        # Each ServiceMonitor selects exactly one Service, and the job label matches the
        # alerts' job=~"modgate.*".
        selector = monitor["spec"]["selector"]["matchLabels"]
        services = [
            s
            for s in of_kind(docs, "Service")
            if selector.items() <= s["metadata"]["labels"].items()
        ]
        assert len(services) == 1
        job = services[0]["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        assert job.startswith("modgate")
        ports = {p["name"] for p in services[0]["spec"]["ports"]}
        assert monitor["spec"]["endpoints"][0]["port"] in ports
    public = one(docs, "Service", "modgate-gateway")
    assert [p["targetPort"] for p in public["spec"]["ports"]] == ["http"]

    policy = one(docs, "NetworkPolicy", "modgate-gateway")["spec"]
    public_rule, admin_rule = policy["ingress"]
    assert public_rule["ports"] == [{"port": 8080, "protocol": "TCP"}]
    assert public_rule["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "ingress-nginx"
    }
    assert admin_rule["ports"] == [{"port": 9090, "protocol": "TCP"}]
    assert "namespaceSelector" in admin_rule["from"][0]
    assert one(docs, "PrometheusRule", "modgate")


def test_prometheus_rule_is_the_shipped_alerts_file(
    rendered_sets: dict[str, list[dict[str, Any]]],
) -> None:
    shipped = yaml.safe_load(ALERTS.read_text())
    (rule,) = of_kind(rendered_sets["monitoring"], "PrometheusRule")
    assert rule["spec"]["groups"] == shipped["groups"]
    # The chart's copy is the file itself, comments included: fix it with
    # cp deploy/prometheus/modgate-alerts.yaml deploy/helm/modgate/files/
    assert (CHART / "files" / "modgate-alerts.yaml").read_text() == ALERTS.read_text()


def test_sidecar_set(rendered_sets: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered_sets["sidecar"]
    assert [d["metadata"]["name"] for d in of_kind(docs, "Deployment")] == ["modgate-sidecar"]
    spec = one(docs, "Deployment", "modgate-sidecar")["spec"]["template"]["spec"]
    app, sidecar = spec["containers"]
    assert app["image"] == "ghcr.io/example/crm:1.4.2"
    assert sidecar["name"] == "modgate"
    env = {k: v["value"] for k, v in env_of(sidecar).items()}
    assert env["MODGATE_MODE"] == "sidecar"
    assert env["MODGATE_SIDECAR_MODULE"] == "6f1c2a9e-3b7d-4e2a-9c1f-0a5b8d7e4c21"
    assert env["MODGATE_LISTEN"] == "0.0.0.0:8080"
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin-modgate"}
    service = one(docs, "Service", "modgate-sidecar")
    assert service["spec"]["ports"][0]["targetPort"] == "http-modgate"

    routes = configmap_data(docs, "modgate-sidecar")["routes.yaml"]
    (module,) = yaml.safe_load(routes)["modules"]
    assert module["upstream"] == "http://127.0.0.1:8000"
    (spec_module,) = parse_manifest_text(routes).modules
    compile_module(spec_module)


def test_sidecar_template_fails_on_port_collision(chart: helm_python.Chart) -> None:
    values = copy.deepcopy(_values("sidecar"))
    values["sidecar"]["app"]["port"] = 9090
    with pytest.raises(helm_python.HelmError, match="collides"):
        render(chart, values)


# -- refused values ---------------------------------------------------------------------------

BAD_VALUES = {
    "unknown top-level key": {"replicaCount": 3},
    "unknown gateway key": {"gateway": {"replicaCount": 3}},
    "string for a boolean": {"hpa": {"enabled": "yes"}},
    "string for replicas": {"gateway": {"replicas": "two"}},
    "unknown setting": {"config": {"listen_address": "0.0.0.0:8080"}},
    "secret in the ConfigMap": {"config": {"database_url": "postgresql://u:p@db/x"}},
    "bad log format": {"config": {"log_format": "xml"}},
    "zero header timeout": {"config": {"client_header_timeout_seconds": 0}},
    "no client connections": {"config": {"max_client_connections": 0}},
    "secret value and existingSecret": {
        "secrets": {"databaseUrl": {"value": "postgresql://u:p@db/x", "existingSecret": "db"}}
    },
    "pdb with both budgets": {"pdb": {"enabled": True, "minAvailable": 1, "maxUnavailable": 1}},
    "bad pull policy": {"image": {"pullPolicy": "Sometimes"}},
    "bad cidr": {"networkPolicy": {"postgres": {"cidrs": ["db.internal"]}}},
}


@pytest.mark.parametrize("values", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_values_are_refused(chart: helm_python.Chart, values: dict[str, Any]) -> None:
    with pytest.raises(helm_python.HelmError):
        chart.validate_schema(values)
    with pytest.raises(helm_python.HelmError):
        render(chart, values)


def test_good_values_pass_the_schema(chart: helm_python.Chart) -> None:
    for name in VALUE_SETS:
        chart.validate_schema(_values(name))


BAD_RENDERS = {
    "grace shorter than preStop + drain": (
        {"gateway": {"terminationGracePeriodSeconds": 20}},
        "terminationGracePeriodSeconds",
    ),
    "migrations without a database": ({"migrations": {"enabled": True}}, "secrets.databaseUrl"),
    "hpa min above max": ({"hpa": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}, "hpa"),
}


@pytest.mark.parametrize(("values", "message"), BAD_RENDERS.values(), ids=BAD_RENDERS.keys())
def test_inconsistent_values_fail_to_render(
    chart: helm_python.Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(helm_python.HelmError, match=message):
        render(chart, values)


def test_no_placeholder_readme_left() -> None:
    assert not (ROOT / "deploy" / "helm" / "README.md").exists()
    assert os.path.getsize(CHART / "README.md") > 0
