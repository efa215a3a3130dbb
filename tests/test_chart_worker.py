"""The chart's delivery worker: its Deployment, probes, metrics, disruption budget and the
egress it may use to reach subscription receivers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import helm_python as helm
import pytest

from tests.test_chart import (
    BASE,
    CHART,
    FULLNAME,
    NAMESPACE,
    RELEASE,
    by_kind,
    merged,
    one,
    render,
)

WORKER = f"{FULLNAME}-worker"


@pytest.fixture(scope="module")
def chart() -> Iterator[Any]:
    loaded = helm.Chart.load(CHART)
    yield loaded
    loaded.close()


@pytest.fixture(scope="module")
def defaults(chart: Any) -> list[dict[str, Any]]:
    return render(chart, BASE)


def container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    deployment = one(objects, "Deployment", WORKER)
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def test_worker_runs_the_worker_command_with_probes_on_its_port(
    defaults: list[dict[str, Any]],
) -> None:
    worker = container(defaults)
    assert worker["command"] == ["ipt-careplans"]
    assert worker["args"] == ["worker", "--host", "0.0.0.0", "--port", "9100"]
    assert worker["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    assert worker["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "metrics"}
    assert worker["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    spec = one(defaults, "Deployment", WORKER)["spec"]
    assert spec["replicas"] == 2
    assert spec["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    pod = spec["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert worker["securityContext"]["readOnlyRootFilesystem"] is True
    # Longer than a subscription's default timeout: notifications under way end first.
    assert pod["terminationGracePeriodSeconds"] > 60
    names = {variable["name"] for variable in worker["env"]}
    assert "IPT_DATABASE_URL" in names


def test_the_server_never_delivers_and_the_worker_reads_the_same_settings(
    defaults: list[dict[str, Any]],
) -> None:
    config = one(defaults, "ConfigMap")["data"]
    assert config["IPT_SUBSCRIPTION_DELIVERY_IN_PROCESS"] == "false"
    assert config["IPT_SUBSCRIPTION_DELIVERY_CONCURRENCY"] == "8"
    assert config["IPT_SUBSCRIPTION_RETENTION_DAYS"] == "7"
    assert "IPT_SUBSCRIPTION_ALLOWED_DESTINATIONS" not in config
    worker = container(defaults)
    assert worker["envFrom"] == [{"configMapRef": {"name": FULLNAME}}]
    server = one(defaults, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert server["envFrom"] == worker["envFrom"]


def test_subscription_settings_are_passed(chart: Any) -> None:
    values = merged(
        BASE,
        {
            "config": {
                "subscriptions": {
                    "allowedDestinations": ["10.20.0.0/16", "fd00::/8"],
                    "retentionDays": 3,
                    "pollMs": 100,
                    "backoffBaseMs": 500,
                    "backoffMaxMs": 60000,
                    "leaseMarginMs": 10000,
                }
            },
            "worker": {"concurrency": 16},
        },
    )
    config = one(render(chart, values), "ConfigMap")["data"]
    assert config["IPT_SUBSCRIPTION_ALLOWED_DESTINATIONS"] == "10.20.0.0/16,fd00::/8"
    assert config["IPT_SUBSCRIPTION_RETENTION_DAYS"] == "3"
    assert config["IPT_SUBSCRIPTION_POLL_MS"] == "100"
    assert config["IPT_SUBSCRIPTION_BACKOFF_BASE_MS"] == "500"
    assert config["IPT_SUBSCRIPTION_BACKOFF_MAX_MS"] == "60000"
    assert config["IPT_SUBSCRIPTION_LEASE_MARGIN_MS"] == "10000"
    assert config["IPT_SUBSCRIPTION_DELIVERY_CONCURRENCY"] == "16"


def test_worker_disruption_budget(defaults: list[dict[str, Any]]) -> None:
    budget = one(defaults, "PodDisruptionBudget", WORKER)["spec"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    server = one(defaults, "PodDisruptionBudget")["spec"]
    assert server["selector"]["matchLabels"]["app.kubernetes.io/component"] == "server"


def test_worker_egress_reaches_public_receivers_only_by_default(
    defaults: list[dict[str, Any]],
) -> None:
    policy = one(defaults, "NetworkPolicy", WORKER)["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    assert policy["ingress"] == []
    (receivers,) = policy["egress"]
    assert receivers["ports"] == [{"protocol": "TCP", "port": 443}]
    blocks = [peer["ipBlock"] for peer in receivers["to"]]
    assert {block["cidr"] for block in blocks} == {"0.0.0.0/0", "::/0"}
    refused = {cidr for block in blocks for cidr in block["except"]}
    assert {"10.0.0.0/8", "169.254.0.0/16", "127.0.0.0/8", "fc00::/7"} <= refused
    # DNS and the database come from the release's policy, which selects the workers too.
    shared = one(defaults, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"]
    assert "app.kubernetes.io/component" not in shared


def test_worker_egress_and_scrapes_are_configurable(chart: Any) -> None:
    values = merged(
        BASE,
        {
            "worker": {
                "receivers": {
                    "ports": [443, 8443],
                    "peers": [{"ipBlock": {"cidr": "10.20.0.0/16"}}],
                    "extraEgress": [{"ports": [{"protocol": "TCP", "port": 3128}]}],
                }
            },
            "networkPolicy": {"allowedNamespaces": ["monitoring"]},
            "serviceMonitor": {"enabled": True},
        },
    )
    objects = render(chart, values)
    policy = one(objects, "NetworkPolicy", WORKER)["spec"]
    receivers, extra = policy["egress"]
    assert receivers["to"] == [{"ipBlock": {"cidr": "10.20.0.0/16"}}]
    assert [port["port"] for port in receivers["ports"]] == [443, 8443]
    assert extra == {"ports": [{"protocol": "TCP", "port": 3128}]}
    (scrapes,) = policy["ingress"]
    assert scrapes["ports"] == [{"protocol": "TCP", "port": 9100}]
    monitor = one(objects, "ServiceMonitor", WORKER)["spec"]
    assert monitor["endpoints"][0]["port"] == "metrics"
    assert monitor["selector"]["matchLabels"]["app.kubernetes.io/component"] == "worker"
    service = one(objects, "Service", WORKER)["spec"]
    assert service["clusterIP"] == "None"
    assert service["ports"][0]["targetPort"] == "metrics"


def test_worker_can_be_turned_off(chart: Any) -> None:
    objects = render(chart, merged(BASE, {"worker": {"enabled": False}}))
    assert [o["metadata"]["name"] for o in by_kind(objects, "Deployment")] == [FULLNAME]
    assert all(o["metadata"]["name"] != WORKER for o in objects)


@pytest.mark.parametrize(
    "override",
    [
        {"worker": {"concurrency": 0}},
        {"worker": {"receivers": {"ports": []}}},
        {"config": {"subscriptions": {"allowedDestinations": ["not a network"]}}},
        {"config": {"subscriptions": {"pollMs": 5}}},
    ],
)
def test_invalid_worker_values_are_refused(chart: Any, override: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.render(merged(BASE, override), name=RELEASE, namespace=NAMESPACE, is_install=True)


# --- bulk export ----------------------------------------------------------------------------


def test_export_settings_default_to_the_services(defaults: list[dict[str, Any]]) -> None:
    from api.config import Settings

    service = Settings()
    config = one(defaults, "ConfigMap")["data"]
    assert config["IPT_EXPORT_FILE_BYTES"] == str(service.export_file_bytes)
    assert config["IPT_EXPORT_RETENTION_SECONDS"] == str(service.export_retention_seconds)
    assert config["IPT_EXPORT_LEASE_SECONDS"] == str(service.export_lease_seconds)
    assert config["IPT_EXPORT_WORKER"] == str(service.export_worker).lower()


def test_export_settings_are_passed_and_read_by_the_service(chart: Any) -> None:
    from api.config import load

    values = merged(
        BASE,
        {
            "config": {
                "export": {
                    "fileBytes": 1048576,
                    "retentionSeconds": 86400,
                    "leaseSeconds": 30,
                    "worker": False,
                }
            }
        },
    )
    config = one(render(chart, values), "ConfigMap")["data"]
    assert config["IPT_EXPORT_FILE_BYTES"] == "1048576"
    assert config["IPT_EXPORT_RETENTION_SECONDS"] == "86400"
    assert config["IPT_EXPORT_LEASE_SECONDS"] == "30"
    assert config["IPT_EXPORT_WORKER"] == "false"
    settings = load({**config, "IPT_DATABASE_URL": "sqlite://"})
    assert settings.export_file_bytes == 1048576
    assert settings.export_retention_seconds == 86400
    assert settings.export_lease_seconds == 30
    assert settings.export_worker is False


@pytest.mark.parametrize(
    "override",
    [
        {"fileBytes": 1023},
        {"fileBytes": 1073741825},
        {"retentionSeconds": 0},
        {"retentionSeconds": 604801},
        {"leaseSeconds": 4},
        {"leaseSeconds": 3601},
        {"worker": "yes"},
        {"fileSize": 1048576},
    ],
)
def test_invalid_export_values_are_refused(chart: Any, override: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart.render(
            merged(BASE, {"config": {"export": override}}),
            name=RELEASE,
            namespace=NAMESPACE,
            is_install=True,
        )
