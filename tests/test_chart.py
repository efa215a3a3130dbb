"""The Helm chart at helm/ipt-careplans: lint, render offline, validate every manifest.

Rendering and linting use Helm itself as a library (helm-python-sdk); manifests are
checked against the Kubernetes OpenAPI schemas (kubernetes-validate, strict).
"""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

CHART = Path(__file__).resolve().parent.parent / "helm" / "ipt-careplans"
KUBERNETES_VERSION = "1.30.0"
RELEASE = "careplans"
NAMESPACE = "health"
FULLNAME = f"{RELEASE}-ipt-careplans"
# Kinds from custom resource definitions: no schema ships with kubernetes-validate.
CRD_KINDS = {"ServiceMonitor"}

SIGNING_KEY = (
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg\n"
    "-----END PRIVATE KEY-----\n"
)
KEY_ENCRYPTION_KEY = "q83vEjRWeJCrze8SNFZ4kKvN7xI0VniQq83vEjRWeJA="
BASE: dict[str, Any] = {
    "image": {"repository": "registry.example.org/ipt-careplans"},
    "database": {"url": "postgresql://ipt:secret@postgres.db.svc:5432/ipt"},
    "tokenSigningKey": {"privateKey": SIGNING_KEY},
    "config": {"publicBaseUrl": "https://careplans.example.org"},
}


def merged(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merged(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": BASE,
    "ingress-tls": merged(
        BASE,
        {
            "ingress": {
                "enabled": True,
                "className": "nginx",
                "annotations": {"nginx.ingress.kubernetes.io/proxy-body-size": "1m"},
                "hosts": [{"host": "careplans.example.org"}],
                "tls": [{"secretName": "careplans-tls", "hosts": ["careplans.example.org"]}],
            }
        },
    ),
    "hpa": merged(
        BASE,
        {
            "autoscaling": {
                "enabled": True,
                "minReplicas": 3,
                "maxReplicas": 12,
                "targetMemoryUtilizationPercentage": 80,
            }
        },
    ),
    "existing-secrets": merged(
        {k: v for k, v in BASE.items() if k not in ("database", "tokenSigningKey")},
        {
            "database": {"existingSecret": "ipt-db", "existingSecretKey": "uri", "port": 6432},
            "tokenSigningKey": {"existingSecret": "ipt-jwt", "existingSecretKey": "key.pem"},
            "serviceAccount": {"create": False, "name": "ipt-runner"},
            "networkPolicy": {"databasePeers": [{"ipBlock": {"cidr": "10.0.12.0/24"}}]},
        },
    ),
    "proxies-kek-redis": merged(
        BASE,
        {
            "config": {"trustedProxies": ["10.244.0.0/16", "fd00::1"]},
            "keyEncryptionKey": {"key": KEY_ENCRYPTION_KEY},
            "rateLimit": {"redis": {"url": "redis://:pw@redis.cache.svc:6380/0"}},
        },
    ),
    "existing-kek-redis": merged(
        BASE,
        {
            "keyEncryptionKey": {"existingSecret": "ipt-kek", "existingSecretKey": "kek"},
            "rateLimit": {"redis": {"existingSecret": "ipt-redis", "existingSecretKey": "url"}},
            "networkPolicy": {"redisPeers": [{"ipBlock": {"cidr": "10.0.20.5/32"}}]},
        },
    ),
    "servicemonitor": merged(
        BASE,
        {
            "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
            "networkPolicy": {"allowedNamespaces": ["monitoring"]},
        },
    ),
}


@pytest.fixture(scope="module")
def chart() -> Any:
    loaded = helm.Chart.load(CHART)
    yield loaded
    loaded.close()


def render(chart: Any, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders with these values, hooks included."""
    rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        for document in yaml.safe_load_all(text):
            if document:
                document.setdefault("metadata", {})["__template"] = path
                objects.append(document)
    return objects


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def is_worker(manifest: dict[str, Any]) -> bool:
    """Whether an object is the delivery worker's (its Deployment, PDB, policy…)."""
    labels = manifest["metadata"].get("labels") or {}
    return bool(labels.get("app.kubernetes.io/component") == "worker")


def one(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    """The object of ``kind`` named ``name``; unnamed, the server's (not the worker's)."""
    found = [
        o
        for o in by_kind(objects, kind)
        if (o["metadata"]["name"] == name if name is not None else not is_worker(o))
    ]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def rendered(chart: Any) -> dict[str, list[dict[str, Any]]]:
    return {label: render(chart, values) for label, values in VALUE_SETS.items()}


# --- lint and Kubernetes schemas ------------------------------------------------------


@pytest.mark.parametrize("label", sorted(VALUE_SETS))
def test_lint_is_clean(label: str) -> None:
    report = helm.lint(
        CHART, VALUE_SETS[label], strict=True, namespace=NAMESPACE, kube_version="v1.30.0"
    )
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("label", sorted(VALUE_SETS))
def test_every_manifest_is_valid_kubernetes(
    rendered: dict[str, list[dict[str, Any]]], label: str
) -> None:
    objects = rendered[label]
    assert objects
    for obj in objects:
        obj = copy.deepcopy(obj)
        template = obj["metadata"].pop("__template")
        if obj["kind"] in CRD_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            pytest.fail(f"{template}: {obj['kind']} {obj['metadata']['name']}: {error.message}")


def test_expected_objects_per_value_set(rendered: dict[str, list[dict[str, Any]]]) -> None:
    def kinds(label: str) -> set[str]:
        return {o["kind"] for o in rendered[label]}

    core = {
        "Deployment",
        "Service",
        "ConfigMap",
        "Secret",
        "ServiceAccount",
        "Job",
        "PodDisruptionBudget",
        "NetworkPolicy",
    }
    assert kinds("defaults") == core
    assert kinds("ingress-tls") == core | {"Ingress"}
    assert kinds("hpa") == core | {"HorizontalPodAutoscaler"}
    assert kinds("servicemonitor") == core | {"ServiceMonitor"}
    # Existing secrets and service account: the chart creates none of them.
    assert kinds("existing-secrets") == core - {"Secret", "ServiceAccount"}


# --- the server pods ---------------------------------------------------------------------


def assert_hardened(pod_spec: dict[str, Any]) -> None:
    pod = pod_spec["securityContext"]
    assert pod["runAsNonRoot"] is True
    assert pod["runAsUser"] == 10001
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod_spec["automountServiceAccountToken"] is False
    for container in pod_spec["containers"]:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["runAsUser"] == 10001
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"] == {"drop": ["ALL"]}
        assert context["seccompProfile"] == {"type": "RuntimeDefault"}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        assert "/tmp" in mounts
        volumes = {v["name"]: v for v in pod_spec["volumes"]}
        assert "emptyDir" in volumes[mounts["/tmp"]]
        assert container["resources"]["requests"]
        assert container["resources"]["limits"]


@pytest.mark.parametrize("label", sorted(VALUE_SETS))
def test_pods_are_hardened(rendered: dict[str, list[dict[str, Any]]], label: str) -> None:
    objects = rendered[label]
    assert_hardened(one(objects, "Deployment")["spec"]["template"]["spec"])
    assert_hardened(one(objects, "Job")["spec"]["template"]["spec"])


def test_server_container(rendered: dict[str, list[dict[str, Any]]]) -> None:
    deployment = one(rendered["defaults"], "Deployment", FULLNAME)
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == FULLNAME
    assert deployment["spec"]["replicas"] == 2
    [container] = spec["containers"]
    assert container["image"] == "registry.example.org/ipt-careplans:1.0.0"
    [job_container] = one(rendered["defaults"], "Job")["spec"]["template"]["spec"]["containers"]
    assert job_container["image"] == container["image"]
    assert [*container["command"], *container["args"]] == [
        "ipt-careplans",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["startupProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    zones = [c["topologyKey"] for c in spec["topologySpreadConstraints"]]
    assert zones == ["topology.kubernetes.io/zone", "kubernetes.io/hostname"]
    for constraint in spec["topologySpreadConstraints"]:
        selector = constraint["labelSelector"]["matchLabels"]
        assert selector == deployment["spec"]["selector"]["matchLabels"]


def test_shutdown_and_metrics_fit_the_pod(rendered: dict[str, list[dict[str, Any]]]) -> None:
    from api.server import GRACEFUL_TIMEOUT_SECONDS

    spec = one(rendered["defaults"], "Deployment", FULLNAME)["spec"]["template"]["spec"]
    [container] = spec["containers"]
    pause = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    # The pod is killed only after the pause and every in-flight request have had their time.
    assert spec["terminationGracePeriodSeconds"] > pause + GRACEFUL_TIMEOUT_SECONDS
    # Under a read-only root filesystem, serve makes its metrics directory in TMPDIR:
    # it must be a writable emptyDir mount.
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    tmpdir = env_of(container)["TMPDIR"]
    [mount] = [m for m in container["volumeMounts"] if m["mountPath"] == tmpdir]
    assert not mount.get("readOnly", False)
    [volume] = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert "emptyDir" in volume


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_configuration_from_configmap_and_secrets(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["defaults"]
    [container] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]
    config = one(objects, "ConfigMap", FULLNAME)["data"]
    assert config["IPT_AUTO_MIGRATE"] == "false"
    assert config["IPT_PUBLIC_BASE_URL"] == "https://careplans.example.org"
    assert config["IPT_LOG_LEVEL"] == "INFO"
    assert config["IPT_WORKERS"] == "2"
    assert config["IPT_THREADS"] == "4"
    assert all(isinstance(v, str) for v in config.values())
    assert "IPT_DATABASE_URL" not in config

    env = env_of(container)
    database_secret = f"{FULLNAME}-database"
    assert env["IPT_DATABASE_URL"] == {
        "secretKeyRef": {"name": database_secret, "key": "database-url"}
    }
    assert one(objects, "Secret", database_secret)["data"]["database-url"]
    key_file = env["IPT_TOKEN_SIGNING_KEY_FILE"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["signing-key"]["readOnly"] is True
    assert key_file == mounts["signing-key"]["mountPath"] + "/signing-key.pem"
    volumes = {
        v["name"]: v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
    }
    assert volumes["signing-key"]["secret"]["secretName"] == f"{FULLNAME}-signing-key"
    assert one(objects, "Secret", f"{FULLNAME}-signing-key")["data"]["signing-key.pem"]


def test_existing_secrets_are_referenced_not_created(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["existing-secrets"]
    assert by_kind(objects, "Secret") == []
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "ipt-runner"
    [container] = spec["containers"]
    env = env_of(container)
    assert env["IPT_DATABASE_URL"] == {"secretKeyRef": {"name": "ipt-db", "key": "uri"}}
    assert env["IPT_TOKEN_SIGNING_KEY_FILE"].endswith("/key.pem")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["signing-key"]["secret"]["secretName"] == "ipt-jwt"
    job = one(objects, "Job")["spec"]["template"]["spec"]
    assert env_of(job["containers"][0])["IPT_DATABASE_URL"] == {
        "secretKeyRef": {"name": "ipt-db", "key": "uri"}
    }
    policy = one(objects, "NetworkPolicy")["spec"]
    assert database_egress(policy) == (6432, [{"ipBlock": {"cidr": "10.0.12.0/24"}}])


def test_service_account_token_is_not_mounted(rendered: dict[str, list[dict[str, Any]]]) -> None:
    account = one(rendered["defaults"], "ServiceAccount", FULLNAME)
    assert account["automountServiceAccountToken"] is False


def test_service_targets_the_server_pods(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["defaults"]
    service = one(objects, "Service", FULLNAME)
    deployment = one(objects, "Deployment")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    pdb = one(objects, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]


# --- migration hook ----------------------------------------------------------------------


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["defaults"]
    job = one(objects, "Job", f"{FULLNAME}-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in annotations["helm.sh/hook-delete-policy"]
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert [*container["command"], *container["args"]] == ["ipt-careplans", "db", "upgrade"]
    assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
    # Hooks run before the release's own objects exist: the Job reads the URL from a
    # hook Secret created just before it.
    secret_name = env_of(container)["IPT_DATABASE_URL"]["secretKeyRef"]["name"]
    secret = one(objects, "Secret", secret_name)
    assert secret["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert int(secret["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(
        annotations["helm.sh/hook-weight"]
    )
    assert "serviceAccountName" not in job["spec"]["template"]["spec"]


# --- network policy ----------------------------------------------------------------------


def test_network_policy(rendered: dict[str, list[dict[str, Any]]]) -> None:
    policy = one(rendered["defaults"], "NetworkPolicy", FULLNAME)["spec"]
    assert sorted(policy["policyTypes"]) == ["Egress", "Ingress"]
    # Selects both the server pods and the migration Job's pods.
    labels = policy["podSelector"]["matchLabels"]
    for kind in ("Deployment", "Job"):
        pod_labels = one(rendered["defaults"], kind)["spec"]["template"]["metadata"]["labels"]
        assert labels.items() <= pod_labels.items()

    [rule] = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8000}]
    [peer] = rule["from"]
    [expression] = peer["namespaceSelector"]["matchExpressions"]
    assert expression["key"] == "kubernetes.io/metadata.name"
    assert expression["values"] == ["ingress-nginx"]

    assert len(policy["egress"]) == 2
    assert policy["egress"][0] == {
        "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    }
    # The database's namespace, from the host of database.url (postgres.db.svc), only.
    assert database_egress(policy) == (5432, [NAMESPACE_DB])


NAMESPACE_DB = {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "db"}}}


def database_egress(policy: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    """The port and peers of the one egress rule that is not DNS (port 53)."""
    [rule] = [r for r in policy["egress"] if r["ports"][0]["port"] != 53]
    [port] = rule["ports"]
    assert port["protocol"] == "TCP"
    return port["port"], rule["to"]


def test_network_policy_admits_listed_namespaces(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    policy = one(rendered["servicemonitor"], "NetworkPolicy")["spec"]
    [expression] = policy["ingress"][0]["from"][0]["namespaceSelector"]["matchExpressions"]
    assert expression["values"] == ["ingress-nginx", "monitoring"]


def egress_rules(policy: dict[str, Any]) -> dict[int, list[dict[str, Any]]]:
    """The peers of each egress rule other than DNS, by port."""
    rules = {}
    for rule in policy["egress"]:
        [port] = [p for p in rule["ports"] if p["protocol"] == "TCP"][:1]
        if port["port"] != 53:
            rules[port["port"]] = rule["to"]
    return rules


def test_defaults_leave_proxies_key_encryption_and_redis_unset(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["defaults"]
    config = one(objects, "ConfigMap", FULLNAME)["data"]
    assert "IPT_TRUSTED_PROXIES" not in config
    [container] = one(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    env = env_of(container)
    assert "IPT_KEY_ENCRYPTION_KEY_FILE" not in env
    assert "IPT_RATE_LIMIT_STORAGE" not in env
    assert list(egress_rules(one(objects, "NetworkPolicy")["spec"])) == [5432]


def test_trusted_proxies_key_encryption_key_and_redis_are_configured(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["proxies-kek-redis"]
    config = one(objects, "ConfigMap", FULLNAME)["data"]
    assert config["IPT_TRUSTED_PROXIES"] == "10.244.0.0/16,fd00::1"
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    [container] = spec["containers"]
    env = env_of(container)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["key-encryption-key"]["readOnly"] is True
    assert (
        env["IPT_KEY_ENCRYPTION_KEY_FILE"]
        == mounts["key-encryption-key"]["mountPath"] + "/key-encryption-key"
    )
    volumes = {v["name"]: v for v in spec["volumes"]}
    kek_secret = f"{FULLNAME}-key-encryption"
    assert volumes["key-encryption-key"]["secret"]["secretName"] == kek_secret
    assert volumes["key-encryption-key"]["secret"]["defaultMode"] == 0o440
    stored = one(objects, "Secret", kek_secret)["data"]["key-encryption-key"]
    assert base64.b64decode(stored).decode() == KEY_ENCRYPTION_KEY
    redis_secret = f"{FULLNAME}-redis"
    assert env["IPT_RATE_LIMIT_STORAGE"] == {
        "secretKeyRef": {"name": redis_secret, "key": "redis-url"}
    }
    assert base64.b64decode(one(objects, "Secret", redis_secret)["data"]["redis-url"]).decode() == (
        "redis://:pw@redis.cache.svc:6380/0"
    )
    # Egress to the database and to that Redis only (its namespace, its port).
    rules = egress_rules(one(objects, "NetworkPolicy")["spec"])
    assert rules == {
        5432: [NAMESPACE_DB],
        6380: [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "cache"}}}],
    }
    # Nothing secret is in the ConfigMap.
    assert not any("pw@" in value or KEY_ENCRYPTION_KEY in value for value in config.values())


def test_existing_key_encryption_and_redis_secrets_are_referenced(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["existing-kek-redis"]
    names = {o["metadata"]["name"] for o in by_kind(objects, "Secret")}
    assert not any(name.endswith(("-key-encryption", "-redis")) for name in names)
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    [container] = spec["containers"]
    env = env_of(container)
    assert env["IPT_KEY_ENCRYPTION_KEY_FILE"].endswith("/kek")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["key-encryption-key"]["secret"]["secretName"] == "ipt-kek"
    assert env["IPT_RATE_LIMIT_STORAGE"] == {"secretKeyRef": {"name": "ipt-redis", "key": "url"}}
    rules = egress_rules(one(objects, "NetworkPolicy")["spec"])
    assert rules[6379] == [{"ipBlock": {"cidr": "10.0.20.5/32"}}]


def test_redis_in_an_existing_secret_needs_its_peers(chart: Any) -> None:
    values = merged(BASE, {"rateLimit": {"redis": {"existingSecret": "ipt-redis"}}})
    with pytest.raises(Exception, match=r"networkPolicy\.redisPeers is required"):
        render(chart, values)
    values = merged(BASE, {"rateLimit": {"redis": {"url": "redis://cache.example.org:6379"}}})
    with pytest.raises(Exception, match=r"networkPolicy\.redisPeers is required"):
        render(chart, values)


# --- optional objects --------------------------------------------------------------------


def test_ingress_with_tls(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ingress = one(rendered["ingress-tls"], "Ingress", FULLNAME)["spec"]
    assert ingress["ingressClassName"] == "nginx"
    assert ingress["tls"] == [{"secretName": "careplans-tls", "hosts": ["careplans.example.org"]}]
    [rule] = ingress["rules"]
    assert rule["host"] == "careplans.example.org"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": FULLNAME, "port": {"name": "http"}}


def test_autoscaling(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["hpa"]
    hpa = one(objects, "HorizontalPodAutoscaler", FULLNAME)
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": FULLNAME,
    }
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (3, 12)
    metrics = {m["resource"]["name"] for m in hpa["spec"]["metrics"]}
    assert metrics == {"cpu", "memory"}
    # The autoscaler owns the replica count.
    assert "replicas" not in one(objects, "Deployment")["spec"]


def test_service_monitor(rendered: dict[str, list[dict[str, Any]]]) -> None:
    monitor = one(rendered["servicemonitor"], "ServiceMonitor", FULLNAME)
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert endpoint["port"] == "http"
    service = one(rendered["servicemonitor"], "Service")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()


def test_notes_tell_how_to_create_the_first_admin_client(chart: Any) -> None:
    notes = chart.render(BASE, name=RELEASE, namespace=NAMESPACE, is_install=True)[
        "ipt-careplans/templates/NOTES.txt"
    ]
    assert (
        f"kubectl --namespace {NAMESPACE} exec deploy/{FULLNAME} -- "
        'ipt-careplans clients create --name admin --scopes "system/*.cruds"'
    ) in notes
    assert f"port-forward svc/{FULLNAME}" in notes


# --- values the schema refuses ------------------------------------------------------------


def without(values: dict[str, Any], *path: str) -> dict[str, Any]:
    result = copy.deepcopy(values)
    node = result
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return result


BAD_PATH = {"path": "/", "pathType": "Any"}
INVALID: dict[str, tuple[dict[str, Any], str]] = {
    "replicaCount as a word": (merged(BASE, {"replicaCount": "two"}), "/replicaCount"),
    "zero replicas": (merged(BASE, {"replicaCount": 0}), "/replicaCount"),
    "ingress className not a string": (
        merged(BASE, {"ingress": {"enabled": True, "className": 42}}),
        "/ingress/className",
    ),
    "unknown pathType": (
        merged(
            BASE,
            {"ingress": {"hosts": [{"host": "a.example.org", "paths": [BAD_PATH]}]}},
        ),
        "pathType",
    ),
    "no database settings": (without(BASE, "database", "url"), "/database"),
    "no image repository": (without(BASE, "image", "repository"), "/image"),
    "not a PostgreSQL URL": (
        merged(BASE, {"database": {"url": "mysql://h/d"}}),
        "/database/url",
    ),
    "no signing key": (without(BASE, "tokenSigningKey", "privateKey"), "/tokenSigningKey"),
    "unknown log level": (merged(BASE, {"config": {"logLevel": "TRACE"}}), "/config/logLevel"),
    "token lifetime too long": (
        merged(BASE, {"config": {"tokenLifetimeSeconds": 86400}}),
        "/config/tokenLifetimeSeconds",
    ),
    "public URL with a trailing slash": (
        merged(BASE, {"config": {"publicBaseUrl": "https://careplans.example.org/"}}),
        "/config/publicBaseUrl",
    ),
    "unknown service type": (
        merged(BASE, {"service": {"type": "ExternalName"}}),
        "/service/type",
    ),
    "grace period shorter than the shutdown": (
        merged(BASE, {"terminationGracePeriodSeconds": 30}),
        "/terminationGracePeriodSeconds",
    ),
    "misspelt value": (merged(BASE, {"autoscaling": {"enable": True}}), "/autoscaling"),
    "trusted proxy not an address": (
        merged(BASE, {"config": {"trustedProxies": ["ingress.example.org"]}}),
        "/config/trustedProxies",
    ),
    "key-encryption key not 32 bytes of base64": (
        merged(BASE, {"keyEncryptionKey": {"key": "secret"}}),
        "/keyEncryptionKey",
    ),
    "key-encryption key given twice": (
        merged(BASE, {"keyEncryptionKey": {"key": KEY_ENCRYPTION_KEY, "existingSecret": "k"}}),
        "/keyEncryptionKey",
    ),
    "rate-limit storage not Redis": (
        merged(BASE, {"rateLimit": {"redis": {"url": "memcached://cache:11211"}}}),
        "/rateLimit/redis",
    ),
    "external issuer without keys": (
        merged(BASE, {"config": {"external": {"issuer": "https://idp.example.org"}}}),
        "/config/external",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_schema_refuses_invalid_values_at_render_time(chart: Any, case: str) -> None:
    values, where = INVALID[case]
    with pytest.raises(helm.HelmValuesError) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    assert where in str(caught.value)


def test_lint_refuses_invalid_values() -> None:
    report = helm.lint(CHART, merged(BASE, {"replicaCount": "two"}), strict=True)
    assert any("/replicaCount" in error for error in report["errors"])
    report = helm.lint(CHART, without(BASE, "database", "url"), strict=True)
    assert any("/database" in error for error in report["errors"])
