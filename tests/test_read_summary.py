"""``_summary`` and ``_elements`` on read and vread, as search applies them."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import Client
from test_fhir_read import assert_valid

from fhir_mappings.summary import SUBSETTED, summary_elements


@pytest.fixture
def episode(client: Client, plan: dict[str, Any]) -> dict[str, Any]:
    bundle = client.get("/fhir/CarePlan", params={"category": "episode"}).json()
    return dict(bundle["entry"][0]["resource"])


def paths(episode: dict[str, Any]) -> list[str]:
    return [
        f"/fhir/CarePlan/{episode['id']}",
        f"/fhir/CarePlan/{episode['id']}/_history/{episode['meta']['versionId']}",
    ]


def subsetted(resource: dict[str, Any]) -> bool:
    return SUBSETTED in resource.get("meta", {}).get("tag", [])


@pytest.mark.parametrize(
    ("params", "kept"),
    [
        ({"_summary": "true"}, lambda r: set(r) & summary_elements("CarePlan")),
        ({"_summary": "text"}, lambda r: {"text"}),
        ({"_summary": "data"}, lambda r: set(r) - {"text"}),
        ({"_elements": "goal,period"}, lambda r: {"goal", "period"}),
        ({"_elements": "partOf"}, lambda r: set()),
        ({"_summary": "false", "_elements": "goal"}, lambda r: {"goal"}),
    ],
)
def test_read_and_vread_reduce_the_resource_as_search_does(
    client: Client, episode: dict[str, Any], params: dict[str, str], kept: Any
) -> None:
    search = client.get("/fhir/CarePlan", params={"_id": episode["id"], **params}).json()
    searched = search["entry"][0]["resource"]
    for path in paths(episode):
        response = client.get(path, params=params)
        assert response.status_code == 200, response.text
        resource = response.json()
        assert_valid(resource)
        assert subsetted(resource)
        assert resource == searched
        mandatory = {"resourceType", "id", "meta", "status", "intent", "subject"}
        assert set(resource) == (set(kept(episode)) | mandatory) & (set(episode) | {"meta"})
        assert response.headers["ETag"] == f'W/"{episode["meta"]["versionId"]}"'


@pytest.mark.parametrize("params", [{}, {"_summary": "false"}, {"_elements": ""}])
def test_without_a_reduction_the_resource_is_served_whole(
    client: Client, episode: dict[str, Any], params: dict[str, str]
) -> None:
    for path in paths(episode):
        resource = client.get(path, params=params).json()
        assert resource == episode
        assert not subsetted(resource)


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"_summary": "count"}, "_summary"),
        ({"_summary": "everything"}, "_summary"),
        ({"_summary": ""}, "_summary"),
        ({"_elements": "colour"}, "_elements"),
        ({"_elements": "status,fhir_comments"}, "_elements"),
        ({"_elements": "CarePlan.status"}, "_elements"),
    ],
)
def test_an_invalid_reduction_is_a_400_naming_it(
    client: Client, episode: dict[str, Any], params: dict[str, str], parameter: str
) -> None:
    for path in paths(episode):
        response = client.get(path, params=params)
        assert response.status_code == 400, response.text
        assert response.json()["issue"][0]["expression"] == [parameter]
    search = client.get("/fhir/CarePlan", params=params)
    if params.get("_summary") != "count":
        assert search.status_code == 400
        assert search.json()["issue"][0]["expression"] == [parameter]


def test_a_reduced_read_still_answers_not_modified(client: Client, episode: dict[str, Any]) -> None:
    response = client.get(
        f"/fhir/CarePlan/{episode['id']}",
        params={"_summary": "true"},
        headers={"If-None-Match": f'W/"{episode["meta"]["versionId"]}"'},
    )
    assert response.status_code == 304


@pytest.mark.parametrize(
    ("resource_id", "status"),
    [
        *((bad, 404) for bad in ("a" * 65, "a%20b", "%C3%A9", "%ED%A0%80", "1.2.3-")),
        # A NUL is text no database stores: the request gate refuses it, naming the parameter.
        *((nul, 400) for nul in ("%00", "x%00y")),
    ],
)
def test_an_id_that_cannot_be_a_fhir_id_is_not_found(
    client: Client, episode: dict[str, Any], resource_id: str, status: int
) -> None:
    for path in (
        f"/fhir/CarePlan/{resource_id}",
        f"/fhir/CarePlan/{resource_id}/_history/1",
        f"/fhir/CarePlan/{resource_id}/_history",
    ):
        response = client.get(path)
        assert response.status_code == status, (path, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
        if status == 400:
            assert response.json()["issue"][0]["expression"] == ["resource_id"]


@pytest.mark.parametrize("version", ["%C2%B2", "99999999999999999999", "2147483648", "-1", "0"])
def test_a_version_that_cannot_exist_is_not_found(
    client: Client, episode: dict[str, Any], version: str
) -> None:
    response = client.get(f"/fhir/CarePlan/{episode['id']}/_history/{version}")
    assert response.status_code == 404, response.text
