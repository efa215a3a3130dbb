"""Free text, as a class: whatever characters a client sends, either the record holds them
and every view of it stays valid (the FHIR narrative is well-formed XHTML), or the write is
refused with 422 naming the field and nothing changes.

FHIR strings and XML 1.0 cannot hold the C0 control characters other than tab, line feed
and carriage return; PostgreSQL cannot store NUL; a lone surrogate is not a character.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from typing import Any

import pytest
from conftest import Client, plan_url
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# Written from the FHIR and XML rules, apart from the service's own pattern.
FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff]")
NOT_XML = re.compile("[\ufffe\uffff]")

texts = st.text(
    alphabet=st.one_of(
        st.characters(max_codepoint=0x7F),
        st.sampled_from("\t\n\r\x01\x07\x0b\x1f\x7f\x85\u2028\ufeff\ufffe\ud800<>&\"'"),
        st.characters(),
    ),
    min_size=1,
    max_size=30,
).filter(lambda text: text.strip() != "")


def narrative_text(resource: dict[str, Any]) -> str:
    div = ElementTree.fromstring(resource["text"]["div"])  # raises unless well-formed
    return "".join(div.itertext())


@pytest.mark.slow
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=texts)
def test_any_text_is_kept_in_valid_xhtml_or_refused_naming_the_field(
    client: Client, plan: dict[str, Any], text: str
) -> None:
    current = client.get(plan_url(plan)).json()
    response = client.patch(
        plan_url(plan),
        json={"formulation": text},
        headers={"If-Match": f'"{current["version"]}"'},
    )
    if FORBIDDEN.search(text):
        assert response.status_code == 422, response.text
        assert [error["field"] for error in response.json()["errors"]] == ["formulation"]
        assert client.get(plan_url(plan)).json()["version"] == current["version"]
        return
    assert response.status_code == 200, response.text
    kept = response.json()["formulation"]
    episode = client.get(f"/fhir/CarePlan/{plan['id']}").json()
    shown = narrative_text(episode)
    # XML reads every line break as a line feed; characters XML cannot hold are shown as
    # U+FFFD.
    expected = NOT_XML.sub("\ufffd", kept.replace("\r\n", "\n").replace("\r", "\n"))
    assert expected in shown


@pytest.mark.slow
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(text=texts)
def test_a_fhir_write_with_any_text_is_kept_or_refused_naming_the_element(
    client: Client, plan: dict[str, Any], text: str
) -> None:
    goal = client.get(plan_url(plan, "goals")).json()["items"][0]
    resource = client.get(f"/fhir/Goal/{goal['id']}").json()
    version = resource["meta"]["versionId"]
    response = client.request(
        "PUT",
        f"/fhir/Goal/{goal['id']}",
        json={**resource, "description": {"text": text}},
        headers={"If-Match": f'W/"{version}"', "Content-Type": "application/fhir+json"},
    )
    after = client.get(f"/fhir/Goal/{goal['id']}").json()
    if FORBIDDEN.search(text):
        assert response.status_code == 422, response.text
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert [issue["expression"] for issue in outcome["issue"]] == [["Goal.description.text"]]
        assert after["meta"]["versionId"] == version
        return
    assert response.status_code == 200, response.text
    assert after["description"]["text"] == text
    narrative_text(after)
