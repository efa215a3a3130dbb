"""The chart's defaults hold under review: a public URL that must be given and be https,
values refused when misspelt at any level, an Ingress that publishes only the APIs, a
NetworkPolicy that lets the pods reach only their database, images pinned by digest."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from tests.conftest import Server
from tests.test_chart import (
    BASE,
    CHART,
    KUBERNETES_VERSION,
    NAMESPACE,
    RELEASE,
    merged,
    one,
    render,
    without,
)

DEFAULTS: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    loaded = helm.Chart.load(CHART)
    yield loaded
    loaded.close()


def refusal(chart: Any, values: dict[str, Any]) -> str:
    """The message a render with these values fails with (schema or template)."""
    with pytest.raises((helm.HelmValuesError, helm.HelmRenderError)) as caught:
        chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return str(caught.value)


# --- item 11: the public base URL ------------------------------------------------------


def test_public_base_url_has_no_default() -> None:
    assert "publicBaseUrl" not in DEFAULTS["config"]
    assert DEFAULTS["config"]["allowInsecurePublicBaseUrl"] is False


# The schema refuses these, so `helm lint` does too (template failures only warn there).
PUBLIC_URL_REFUSED: dict[str, tuple[dict[str, Any], str]] = {
    "absent": (
        without(BASE, "config", "publicBaseUrl"),
        "at '/config': missing property 'publicBaseUrl'",
    ),
    "empty": (
        merged(BASE, {"config": {"publicBaseUrl": ""}}),
        "at '/config/publicBaseUrl': '' does not match pattern '^https://'",
    ),
    "the old localhost default": (
        merged(BASE, {"config": {"publicBaseUrl": "http://127.0.0.1:8000"}}),
        "at '/config/publicBaseUrl': 'http://127.0.0.1:8000' does not match pattern '^https://'",
    ),
    "http not allowed": (
        merged(
            BASE,
            {
                "config": {
                    "publicBaseUrl": "http://careplans.example.org",
                    "allowInsecurePublicBaseUrl": False,
                }
            },
        ),
        "at '/config/publicBaseUrl': 'http://careplans.example.org' does not match pattern "
        "'^https://'",
    ),
    "allowed by a string": (
        merged(
            BASE,
            {
                "config": {
                    "publicBaseUrl": "http://careplans.example.org",
                    "allowInsecurePublicBaseUrl": "true",
                }
            },
        ),
        "at '/config/allowInsecurePublicBaseUrl'",
    ),
}


@pytest.mark.parametrize("case", sorted(PUBLIC_URL_REFUSED))
def test_public_base_url_is_required_and_https(chart: Any, case: str) -> None:
    values, message = PUBLIC_URL_REFUSED[case]
    assert message in refusal(chart, values)
    report = helm.lint(CHART, values, strict=True)
    assert any(message in error for error in report["errors"])


@pytest.mark.parametrize(
    ("url", "allow"),
    [
        ("https://careplans.example.org", False),
        ("https://careplans.example.org/ipt", False),
        ("http://careplans.trial.svc", True),
    ],
)
def test_accepted_public_base_urls_reach_the_service(chart: Any, url: str, allow: bool) -> None:
    values = merged(BASE, {"config": {"publicBaseUrl": url, "allowInsecurePublicBaseUrl": allow}})
    config = one(render(chart, values), "ConfigMap")["data"]
    assert config["IPT_PUBLIC_BASE_URL"] == url


# --- item 12: unknown keys are refused at every level ----------------------------------

# The objects of values.yaml that are open maps, and why: their keys are not the chart's.
OPEN: dict[tuple[str | int, ...], tuple[str, Any]] = {
    # Annotation and label keys are the cluster's (prefix/name), any number of them.
    ("serviceAccount", "annotations"): ("example.org/owner", "psychiatry"),
    ("service", "annotations"): ("example.org/owner", "psychiatry"),
    ("ingress", "annotations"): ("nginx.ingress.kubernetes.io/proxy-body-size", "1m"),
    ("serviceMonitor", "labels"): ("release", "prometheus"),
    ("podAnnotations",): ("example.org/owner", "psychiatry"),
    ("podLabels",): ("example.org/team", "psychiatry"),
    # Node labels to select on.
    ("nodeSelector",): ("topology.kubernetes.io/zone", "eu-west-1a"),
    # A Kubernetes Affinity, checked by the API server against its own schema.
    ("affinity",): ("nodeAffinity", {}),
    # Environment variables the chart has no value for (checked by name, not by list).
    ("config", "extraEnv"): ("HTTPS_PROXY", "http://proxy.example.org:3128"),
    # Keyed by resource name: cpu, memory, ephemeral-storage, hugepages-*, vendor devices.
    ("resources", "requests"): ("ephemeral-storage", "1Gi"),
    ("resources", "limits"): ("ephemeral-storage", "2Gi"),
    ("migration", "resources", "requests"): ("ephemeral-storage", "1Gi"),
    ("migration", "resources", "limits"): ("ephemeral-storage", "2Gi"),
    ("worker", "resources", "requests"): ("ephemeral-storage", "1Gi"),
    ("worker", "resources", "limits"): ("ephemeral-storage", "2Gi"),
    ("worker", "podAnnotations"): ("example.org/owner", "psychiatry"),
    ("worker", "podLabels"): ("example.org/team", "psychiatry"),
    ("worker", "nodeSelector"): ("topology.kubernetes.io/zone", "eu-west-1a"),
    ("worker", "affinity"): ("nodeAffinity", {}),
}


def objects_in(tree: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """The path of every object (mapping) in a values tree, list items included."""
    if isinstance(tree, dict):
        yield path
        for key, value in tree.items():
            yield from objects_in(value, (*path, key))
    elif isinstance(tree, list):
        for index, item in enumerate(tree):
            yield from objects_in(item, (*path, index))


def misspelt(keys: list[str]) -> str:
    """A typo of one of the keys (two neighbouring letters swapped) that is no key itself."""
    for key in keys:
        for i in range(len(key) - 2, 0, -1):
            typo = key[:i] + key[i + 1] + key[i] + key[i + 2 :]
            if typo != key and typo not in keys:
                return typo
    return "unknownSetting"


# values.yaml with the required values given: it renders, so a refusal is the typo's.
COMPLETE = merged(DEFAULTS, BASE)
OBJECTS = list(objects_in(COMPLETE))


def at(values: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    node: Any = values
    for part in path:
        node = node[part]
    return node


def label(path: tuple[str | int, ...]) -> str:
    return "/".join(str(part) for part in path) or "(top level)"


def test_the_walk_sees_every_level() -> None:
    paths = set(OBJECTS)
    assert {(), ("config",), ("config", "external"), ("probes", "startup")} <= paths
    assert {("ingress", "hosts", 0), ("ingress", "paths", 3)} <= paths
    assert set(OPEN) <= paths, "an open map listed here is no longer in values.yaml"
    assert len(paths - set(OPEN)) > 25


@pytest.mark.parametrize("path", [p for p in OBJECTS if p not in OPEN], ids=label)
def test_a_misspelt_key_is_refused_at_every_level(chart: Any, path: tuple[str | int, ...]) -> None:
    values = copy.deepcopy(COMPLETE)
    node = at(values, path)
    typo = misspelt(list(node))
    node[typo] = copy.deepcopy(next(iter(node.values()), True))
    message = refusal(chart, values)
    assert f"additional properties '{typo}' not allowed" in message
    where = "".join(f"/{part}" for part in path)
    assert f"at '{where}'" in message


@pytest.mark.parametrize("path", sorted(OPEN, key=label), ids=label)
def test_open_maps_take_keys_of_their_own(chart: Any, path: tuple[str | int, ...]) -> None:
    values = copy.deepcopy(COMPLETE)
    key, value = OPEN[path]
    at(values, path)[key] = value
    assert render(chart, values)


def test_every_object_in_the_schema_says_whether_it_is_open() -> None:
    """additionalProperties is stated on every object: false, or the schema of its values.

    Left unstated only where the content is not the chart's: Helm's globals and
    Kubernetes objects passed through as given (the API server checks those).
    """
    unstated = []

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "additionalProperties" not in node:
                unstated.append("/".join(path))
            for key, value in node.items():
                walk(value, (*path, key))
        elif isinstance(node, list):
            for index, item in enumerate(node):
                walk(item, (*path, str(index)))

    walk(SCHEMA, ())
    assert sorted(unstated) == ["definitions/kubernetesObject", "properties/global"]
    assert SCHEMA["additionalProperties"] is False


@pytest.mark.parametrize("name", ["IPT_PUBLIC_BASE_URL", "IPT_DATABASE_URL", "TMPDIR", "1BAD"])
def test_extra_env_cannot_override_what_the_chart_sets(chart: Any, name: str) -> None:
    values = merged(BASE, {"config": {"extraEnv": {name: "x"}}})
    assert f"invalid propertyName '{name}'" in refusal(chart, values)


# --- item 14: the Ingress publishes the APIs only --------------------------------------

API_PATHS = ["/api", "/fhir", "/auth", "/.well-known"]
INGRESS = {"ingress": {"enabled": True, "hosts": [{"host": "careplans.example.org"}]}}


def ingress_paths(objects: list[dict[str, Any]]) -> dict[str, list[tuple[str, str]]]:
    rules = one(objects, "Ingress")["spec"]["rules"]
    return {
        rule["host"]: [(p["path"], p["pathType"]) for p in rule["http"]["paths"]] for rule in rules
    }


def routed(path: str, prefixes: list[str]) -> bool:
    """Whether an Ingress with these Prefix paths routes a request path (element-wise)."""
    elements = [e for e in path.split("/") if e]
    return any(elements[: len(p)] == p for p in ([e for e in x.split("/") if e] for x in prefixes))


def test_ingress_routes_only_the_api_paths_by_default(chart: Any) -> None:
    paths = ingress_paths(render(chart, merged(BASE, INGRESS)))
    assert paths == {"careplans.example.org": [(p, "Prefix") for p in API_PATHS]}


# Routes kept inside the cluster: probes, metrics, the API description and its viewer.
INTERNAL = {"/", "/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"}


def test_the_api_paths_are_every_route_a_client_needs(live: Server) -> None:
    """Every route of the service is either published by the default paths or internal."""
    rules = {rule.rule for rule in live.app.url_map.iter_rules()}
    internal = {r for r in rules if r in INTERNAL or r.startswith(("/docs/", "/static/"))}
    assert {"/metrics", "/docs", "/openapi.json", "/healthz", "/readyz"} <= internal
    for rule in sorted(internal):
        assert not routed(rule, API_PATHS), rule
    for rule in sorted(rules - internal):
        assert routed(rule, API_PATHS), f"{rule} is not published by the Ingress"
    for needed in ["/auth/token", "/.well-known/smart-configuration", "/.well-known/jwks.json"]:
        assert needed in rules


def test_ingress_paths_are_configurable(chart: Any) -> None:
    values = merged(
        BASE,
        {
            "ingress": {
                "enabled": True,
                "paths": [{"path": "/fhir"}, {"path": "/openapi.json", "pathType": "Exact"}],
                "hosts": [
                    {"host": "careplans.example.org"},
                    {"host": "ehr-only.example.org", "paths": [{"path": "/fhir/metadata"}]},
                ],
            }
        },
    )
    assert ingress_paths(render(chart, values)) == {
        "careplans.example.org": [("/fhir", "Prefix"), ("/openapi.json", "Exact")],
        "ehr-only.example.org": [("/fhir/metadata", "Prefix")],
    }


@pytest.mark.parametrize(
    "ingress",
    [{"paths": []}, {"paths": [{"path": "metrics"}]}, {"hosts": [{"host": "a", "paths": []}]}],
    ids=["no paths", "relative path", "host without paths"],
)
def test_ingress_paths_are_checked(chart: Any, ingress: dict[str, Any]) -> None:
    assert "/ingress/" in refusal(chart, merged(BASE, {"ingress": ingress}))


# --- item 14: database egress to the configured database only --------------------------


def database_rule(objects: list[dict[str, Any]]) -> tuple[int, list[dict[str, Any]]]:
    egress = one(objects, "NetworkPolicy")["spec"]["egress"]
    [rule] = [r for r in egress if r["ports"][0]["port"] != 53]
    [port] = rule["ports"]
    return port["port"], rule["to"]


def namespace_peer(name: str) -> dict[str, Any]:
    return {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}}


@pytest.mark.parametrize(
    ("settings", "policy", "expected"),
    [
        (
            {"url": "postgresql://ipt:s@10.0.12.7/ipt"},
            {},
            (5432, [{"ipBlock": {"cidr": "10.0.12.7/32"}}]),
        ),
        (
            {"url": "postgresql://ipt:s@[fd00::7]:6432/ipt"},
            {},
            (6432, [{"ipBlock": {"cidr": "fd00::7/128"}}]),
        ),
        ({"url": "postgresql://ipt:s@pg-rw.db.svc:5433/ipt"}, {}, (5433, [namespace_peer("db")])),
        (
            {"url": "postgresql+psycopg://ipt:s@pg-rw.data.svc.cluster.local/ipt"},
            {},
            (5432, [namespace_peer("data")]),
        ),
        (
            {"url": "postgresql://ipt:s@pg-rw.db.svc:6432/ipt", "port": 6432},
            {},
            (6432, [namespace_peer("db")]),
        ),
        (
            {"url": "postgresql://ipt:s@db.example.org/ipt"},
            {"databasePeers": [{"ipBlock": {"cidr": "192.0.2.0/28"}}]},
            (5432, [{"ipBlock": {"cidr": "192.0.2.0/28"}}]),
        ),
        (
            {"url": "", "existingSecret": "ipt-db", "port": 6432},
            {"databasePeers": [namespace_peer("pgbouncer")]},
            (6432, [namespace_peer("pgbouncer")]),
        ),
    ],
    ids=[
        "ipv4",
        "ipv6",
        "service",
        "service-fqdn",
        "port-agrees",
        "peers-given",
        "existing-secret",
    ],
)
def test_database_egress_is_the_configured_database_only(
    chart: Any, settings: dict[str, Any], policy: dict[str, Any], expected: tuple[int, Any]
) -> None:
    values = merged(BASE, {"database": settings, "networkPolicy": policy})
    objects = render(chart, values)
    assert database_rule(objects) == expected
    manifest = copy.deepcopy(one(objects, "NetworkPolicy"))
    del manifest["metadata"]["__template"]
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"url": "postgresql://ipt:s@db.example.org/ipt"},
            'networkPolicy.databasePeers is required: the database host "db.example.org"',
        ),
        (
            {"url": "", "existingSecret": "ipt-db"},
            "networkPolicy.databasePeers is required: the database URL is in "
            "database.existingSecret",
        ),
        (
            {"url": "postgresql://ipt:s@pg-rw.db.svc:6432/ipt", "port": 5432},
            "database.port (5432) differs from the port of database.url (6432)",
        ),
    ],
    ids=["external-name", "existing-secret", "port-conflict"],
)
def test_database_egress_that_cannot_be_derived_is_required(
    chart: Any, settings: dict[str, Any], message: str
) -> None:
    assert message in refusal(chart, merged(BASE, {"database": settings}))


def test_without_a_network_policy_no_peers_are_needed(chart: Any) -> None:
    values = merged(
        BASE,
        {"database": {"url": "", "existingSecret": "ipt-db"}, "networkPolicy": {"enabled": False}},
    )
    objects = render(chart, values)
    assert not [o for o in objects if o["kind"] == "NetworkPolicy"]


# --- item 14: images pinned by digest --------------------------------------------------

DIGEST = "sha256:" + "0123456789abcdef" * 4


def test_image_digest_wins_over_the_tag(chart: Any) -> None:
    values = merged(BASE, {"image": {"tag": "1.0.0", "digest": DIGEST}})
    objects = render(chart, values)
    for kind in ("Deployment", "Job"):
        [container] = one(objects, kind)["spec"]["template"]["spec"]["containers"]
        assert container["image"] == f"registry.example.org/ipt-careplans@{DIGEST}"


@pytest.mark.parametrize("digest", ["latest", "sha256:abc", "sha512:" + "0" * 64])
def test_image_digest_must_be_a_sha256(chart: Any, digest: str) -> None:
    assert "/image/digest" in refusal(chart, merged(BASE, {"image": {"digest": digest}}))
