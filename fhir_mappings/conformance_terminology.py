"""The CodeSystem and ValueSet of every local code list, generated from ``terminology``.

Codes come from the enums of ``service.codes`` through ``terminology.LOCAL_CODE_SYSTEMS``,
so a code added to the domain is published here at once. Displays come from the display
tables of ``service.codes`` where the domain has one, otherwise from the code itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from html import escape
from typing import Any

from fhir_mappings import terminology
from fhir_mappings.terminology import LocalCodeSystem
from service import codes
from service.instruments import INSTRUMENTS

PUBLISHER = "ipt-careplans"
VERSION = "1.0.0"
# A fixed publication date: the resources must be identical on every call.
DATE = "2026-11-25"

_DISPLAY_TABLES: dict[type[StrEnum], Mapping[Any, str]] = {
    codes.ProblemArea: codes.PROBLEM_AREA_DISPLAY,
    codes.PhaseCode: codes.PHASE_DISPLAY,
    terminology.SafetySignalKind: {
        terminology.SafetySignalKind.SELF_HARM_THOUGHTS: terminology.SAFETY_SIGNAL_TEXT
    },
    **{
        terminology.SEVERITY[key]: {band.code: band.display for band in instrument.bands}
        for key, instrument in INSTRUMENTS.items()
    },
}


def pascal_case(name: str) -> str:
    """A computer-friendly FHIR name from a hyphenated id: "ipt-goal-kind" -> "IptGoalKind"."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("-"))


def display(enum: type[StrEnum], code: str) -> str:
    """The human display of a code: the domain's own display, or the code made readable."""
    domain_display = _DISPLAY_TABLES.get(enum, {}).get(code)
    return domain_display or code.replace("-", " ").capitalize()


def narrative(*paragraphs: str, table: list[tuple[str, str]] | None = None) -> dict[str, str]:
    """A generated narrative: plain paragraphs, optionally followed by a code table."""
    body = "".join(f"<p>{escape(p)}</p>" for p in paragraphs)
    if table:
        rows = "".join(f"<tr><td>{escape(a)}</td><td>{escape(b)}</td></tr>" for a, b in table)
        body += f"<table><tr><th>Code</th><th>Display</th></tr>{rows}</table>"
    return {"status": "generated", "div": f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'}


def canonical(
    resource_type: str,
    resource_id: str,
    url: str,
    title: str,
    description: str,
    text: dict[str, str],
) -> dict[str, Any]:
    """The elements every conformance resource of the project shares, in FHIR order."""
    return {
        "resourceType": resource_type,
        "id": resource_id,
        "text": text,
        "url": url,
        "version": VERSION,
        "name": pascal_case(resource_id),
        "title": title,
        "status": "active",
        "experimental": False,
        "date": DATE,
        "publisher": PUBLISHER,
        "description": description,
    }


def code_system(system: LocalCodeSystem) -> dict[str, Any]:
    """The CodeSystem of one local code list, with every code of its enum."""
    concepts = [(code, display(system.enum, code)) for code in system.codes]
    text = narrative(f"{system.title}: {system.description}", table=concepts)
    return {
        **canonical("CodeSystem", system.name, system.url, system.title, system.description, text),
        "caseSensitive": True,
        "valueSet": system.value_set_url,
        "content": "complete",
        "count": len(concepts),
        "concept": [{"code": code, "display": shown} for code, shown in concepts],
    }


def value_set(system: LocalCodeSystem) -> dict[str, Any]:
    """The ValueSet of all codes of one local code system."""
    description = f"All codes of the {system.title} code system. {system.description}"
    text = narrative(f"{system.title}: all codes of {system.url}.")
    url = system.value_set_url
    return {
        **canonical("ValueSet", system.name, url, system.title, description, text),
        "immutable": False,
        "compose": {"include": [{"system": system.url}]},
    }


def code_systems() -> list[dict[str, Any]]:
    """One CodeSystem per local code list, in the order ``terminology`` declares them."""
    return [code_system(system) for system in terminology.LOCAL_CODE_SYSTEMS.values()]


def value_sets() -> list[dict[str, Any]]:
    """One ValueSet per local code system, including all of its codes."""
    return [value_set(system) for system in terminology.LOCAL_CODE_SYSTEMS.values()]
