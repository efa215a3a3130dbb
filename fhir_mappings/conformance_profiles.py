"""The StructureDefinitions of the project: one per extension, and the profiles.

Extension URLs come from ``terminology``; code-valued elements bind to the ValueSets of
``terminology.LOCAL_CODE_SYSTEMS``. The sub-extensions are those of docs/fhir-mapping.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhir_mappings import terminology
from fhir_mappings.conformance_terminology import canonical, narrative
from fhir_mappings.terminology import LocalCodeSystem, local
from service import codes, rules

FHIR_BASE = "http://hl7.org/fhir/StructureDefinition"
EXTENSION_BASE = f"{FHIR_BASE}/Extension"

CAREPLAN = "CarePlan"
ACTIVITY_DETAIL = "CarePlan.activity.detail"
GOAL = "Goal"
ADMINISTRATION = "QuestionnaireResponse, Observation"
FLAG = "Flag"


def _slicing(discriminator: str, path: str) -> dict[str, Any]:
    # A new dict each time: the resources are handed out and must not share mutable parts.
    return {
        "discriminator": [{"type": discriminator, "path": path}],
        "ordered": False,
        "rules": "open",
    }


@dataclass(frozen=True)
class Ext:
    """An extension (url = its canonical URL) or a sub-extension (url = its name)."""

    url: str
    short: str
    definition: str
    context: str = ""
    value: str | None = None  # FHIR type of value[x]; None for a complex extension
    binding: LocalCodeSystem | None = None
    parts: tuple[Ext, ...] = ()
    min: int = 0
    max: str = "1"
    target: str | None = None  # profile a Reference value conforms to
    min_value: int | None = None
    max_value: int | None = None

    @property
    def id(self) -> str:
        """The id of the extension's StructureDefinition: the tail of its URL."""
        return self.url.rsplit("/", 1)[-1]

    @property
    def contexts(self) -> list[str]:
        """The elements it may be used on (``context`` lists them comma-separated)."""
        return [c.strip() for c in self.context.split(",") if c.strip()]


_CONTACT = Ext(
    "contact",
    "Person to contact",
    "Someone the patient agreed to contact when warning signs appear.",
    max="*",
    parts=(
        Ext("name", "Name", "Who the contact is.", value="string", min=1),
        Ext(
            "relationship",
            "Relationship",
            "How the contact relates to the patient.",
            value="string",
        ),
        Ext("telecom", "How to reach", "Phone number or other way to reach them.", value="string"),
    ),
)

# The session counts any variant allows; each variant narrows them.
_MIN_SESSIONS = min(c.min_sessions for c in codes.VARIANT_CONTRACTS.values())
_MAX_SESSIONS = max(c.max_sessions for c in codes.VARIANT_CONTRACTS.values())

EXTENSIONS: tuple[Ext, ...] = (
    Ext(
        terminology.EXT_VARIANT,
        "IPT variant",
        "The format of IPT the plan follows.",
        CAREPLAN,
        value="code",
        binding=local("ipt-variant"),
    ),
    Ext(
        terminology.EXT_PLANNED_SESSIONS,
        "Planned sessions",
        "The number of sessions of the current treatment contract. The bounds are those over "
        "all variants; each variant allows a narrower range.",
        CAREPLAN,
        value="positiveInt",
        min_value=_MIN_SESSIONS,
        max_value=_MAX_SESSIONS,
    ),
    Ext(
        terminology.EXT_SESSION_FREQUENCY,
        "Session frequency",
        "How often sessions take place under the current treatment contract.",
        CAREPLAN,
        value="code",
        binding=local("ipt-session-frequency"),
    ),
    Ext(
        terminology.EXT_CONTRACT,
        "IPT treatment contract",
        "One treatment contract agreed with the patient; the contracts form a server-managed "
        "history, one extension per contract.",
        CAREPLAN,
        max="*",
        parts=(
            Ext("sequence", "Sequence", "Order of the contract.", value="positiveInt", min=1),
            Ext(
                "plannedSessions",
                "Planned sessions",
                "The number of sessions agreed.",
                value="positiveInt",
                min=1,
                min_value=_MIN_SESSIONS,
                max_value=_MAX_SESSIONS,
            ),
            Ext(
                "frequency",
                "Frequency",
                "How often sessions take place.",
                value="code",
                min=1,
                binding=local("ipt-session-frequency"),
            ),
            Ext("reason", "Reason", "Why the contract was agreed or changed.", value="string"),
            Ext("agreed", "Agreed", "When the contract was agreed.", value="dateTime", min=1),
            Ext("agreedBy", "Agreed by", "Who recorded the agreement.", value="string", min=1),
        ),
    ),
    Ext(
        terminology.EXT_PROBLEM_AREA,
        "IPT problem area",
        "A problem area the treatment focuses on, one extension per area.",
        CAREPLAN,
        max="*",
        parts=(
            Ext(
                "area",
                "Problem area",
                "The interpersonal problem area.",
                value="Coding",
                min=1,
                binding=local("ipt-problem-area"),
            ),
            Ext(
                "rank",
                "Rank",
                "Whether this is the primary (first) or the secondary problem area.",
                value="code",
                min=1,
                binding=local("ipt-problem-area-rank"),
            ),
            Ext(
                "disputeStage",
                "Role-dispute stage",
                "The stage of the role dispute, for a role-dispute problem area.",
                value="Coding",
                binding=local("ipt-dispute-stage"),
            ),
        ),
    ),
    Ext(
        terminology.EXT_RELAPSE_PREVENTION,
        "IPT relapse prevention plan",
        "The warning signs, actions and contacts the patient agreed on to prevent relapse.",
        CAREPLAN,
        parts=(
            Ext("warningSign", "Warning sign", "A sign of relapse.", value="string", max="*"),
            Ext("action", "Action", "What to do when a sign appears.", value="string", max="*"),
            _CONTACT,
        ),
    ),
    Ext(
        terminology.EXT_SESSION_RANGE,
        "Session range of a phase",
        "The numbers of the first and the last session of the phase.",
        CAREPLAN,
        parts=(
            Ext(
                "first", "First session", "Number of its first session.", value="positiveInt", min=1
            ),
            Ext("last", "Last session", "Number of its last session.", value="positiveInt", min=1),
        ),
    ),
    Ext(
        terminology.EXT_SESSION_NUMBER,
        "Session number",
        "The number of the session within the course of IPT.",
        ACTIVITY_DETAIL,
        value="positiveInt",
    ),
    Ext(
        terminology.EXT_PHQ9_TOTAL,
        "PHQ-9 total score",
        "The PHQ-9 total score the patient reached at the session.",
        ACTIVITY_DETAIL,
        value="integer",
        min_value=codes.PHQ9_TOTAL.min_score,
        max_value=codes.PHQ9_TOTAL.max_score,
    ),
    Ext(
        terminology.EXT_SESSION_TECHNIQUE,
        "Session technique",
        "A technique the therapist used in the session, one extension per technique.",
        ACTIVITY_DETAIL,
        value="Coding",
        binding=local("ipt-session-technique"),
        max="*",
    ),
    Ext(
        terminology.EXT_GOAL_EPISODE,
        "Episode of the goal",
        "The episode CarePlan the goal belongs to.",
        GOAL,
        value="Reference",
        target=terminology.EPISODE_PROFILE,
    ),
    Ext(
        terminology.EXT_GOAL_PHASE,
        "Phase of the goal",
        "The IPT phase the goal is worked on in.",
        GOAL,
        value="code",
        binding=local("ipt-phase"),
    ),
    Ext(
        terminology.EXT_ANSWERED_BY,
        "Answered by",
        "Who gave the answers of the administration of a rating scale: the patient "
        "(self-report), a clinician reading the questions out in a session, or a carer.",
        ADMINISTRATION,
        value="code",
        binding=local("ipt-answered-by"),
    ),
    Ext(
        terminology.EXT_SCORE_SOURCE,
        "Source of the total",
        "Whether the total was computed from the item answers (items) or imported from "
        "elsewhere without them (total-only): a total-only QuestionnaireResponse has no items.",
        ADMINISTRATION,
        value="code",
        binding=local("ipt-score-source"),
    ),
    Ext(
        terminology.EXT_ACKNOWLEDGEMENT,
        "Acknowledgement of a safety signal",
        "The clinician's acknowledgement that closed the safety signal: when, by whom, and "
        "what was done.",
        FLAG,
        parts=(
            Ext("at", "At", "When the signal was acknowledged.", value="dateTime", min=1),
            Ext("by", "By", "Who acknowledged it.", value="string", min=1),
            Ext("action", "Action taken", "What was done.", value="string"),
        ),
    ),
)
_EXTENSION = {ext.url: ext for ext in EXTENSIONS}


def slice_name(url: str) -> str:
    """The slice name of an extension in a profile: ".../ipt-goal-phase" -> "goalPhase"."""
    words = url.rsplit("/", 1)[-1].removeprefix("ipt-").split("-")
    return words[0] + "".join(word.capitalize() for word in words[1:])


def _value_element(ext: Ext, element_id: str, path: str) -> dict[str, Any]:
    if ext.value is None:
        return {"id": f"{element_id}.value[x]", "path": f"{path}.value[x]", "max": "0"}
    value_type: dict[str, Any] = {"code": ext.value}
    if ext.target:
        value_type["targetProfile"] = [ext.target]
    element: dict[str, Any] = {
        "id": f"{element_id}.value[x]",
        "path": f"{path}.value[x]",
        "min": 1,
        "type": [value_type],
    }
    suffix = ext.value[0].upper() + ext.value[1:]
    if ext.min_value is not None:
        element[f"minValue{suffix}"] = ext.min_value
    if ext.max_value is not None:
        element[f"maxValue{suffix}"] = ext.max_value
    if ext.binding:
        element["binding"] = {"strength": "required", "valueSet": ext.binding.value_set_url}
    return element


def _extension_elements(ext: Ext, element_id: str, path: str) -> list[dict[str, Any]]:
    """The elements below an Extension (or a sub-extension slice): extension, url, value[x]."""
    nested_id, nested_path = f"{element_id}.extension", f"{path}.extension"
    if ext.parts:
        elements: list[dict[str, Any]] = [
            {"id": nested_id, "path": nested_path, "slicing": _slicing("value", "url"), "min": 1}
        ]
        for part in ext.parts:
            part_id = f"{nested_id}:{part.url}"
            elements.append(
                {
                    "id": part_id,
                    "path": nested_path,
                    "sliceName": part.url,
                    "short": part.short,
                    "definition": part.definition,
                    "min": part.min,
                    "max": part.max,
                }
            )
            elements += _extension_elements(part, part_id, nested_path)
    else:
        elements = [{"id": nested_id, "path": nested_path, "max": "0"}]
    elements.append({"id": f"{element_id}.url", "path": f"{path}.url", "fixedUri": ext.url})
    elements.append(_value_element(ext, element_id, path))
    return elements


def extension_definition(ext: Ext) -> dict[str, Any]:
    """The StructureDefinition of one extension."""
    text = narrative(ext.short, ext.definition, f"Used on {ext.context}.")
    root = {
        "id": "Extension",
        "path": "Extension",
        "short": ext.short,
        "definition": ext.definition,
        "min": 0,
        "max": ext.max,
    }
    return {
        **canonical("StructureDefinition", ext.id, ext.url, ext.short, ext.definition, text),
        "fhirVersion": terminology.FHIR_VERSION,
        "kind": "complex-type",
        "abstract": False,
        "context": [{"type": "element", "expression": c} for c in ext.contexts],
        "type": "Extension",
        "baseDefinition": EXTENSION_BASE,
        "derivation": "constraint",
        "differential": {"element": [root, *_extension_elements(ext, "Extension", "Extension")]},
    }


def _extension_slices(path: str, *uses: tuple[str, int, str]) -> list[dict[str, Any]]:
    """Slices of ``path``.extension, one per (extension URL, min, max)."""
    elements: list[dict[str, Any]] = [
        {
            "id": f"{path}.extension",
            "path": f"{path}.extension",
            "slicing": _slicing("value", "url"),
        }
    ]
    for url, minimum, maximum in uses:
        name = slice_name(url)
        elements.append(
            {
                "id": f"{path}.extension:{name}",
                "path": f"{path}.extension",
                "sliceName": name,
                "short": _EXTENSION[url].short,
                "min": minimum,
                "max": maximum,
                "type": [{"code": "Extension", "profile": [url]}],
            }
        )
    return elements


def _category_slices(
    path: str, *slices: tuple[str, LocalCodeSystem, str | None, int]
) -> list[dict[str, Any]]:
    """Slices of ``path`` by pattern, one per (name, code system, fixed code or None, min)."""
    elements: list[dict[str, Any]] = [
        {"id": path, "path": path, "min": 1, "slicing": _slicing("pattern", "$this")}
    ]
    for name, system, code, minimum in slices:
        coding = {"system": system.url} if code is None else {"system": system.url, "code": code}
        element: dict[str, Any] = {
            "id": f"{path}:{name}",
            "path": path,
            "sliceName": name,
            "short": system.title,
            "min": minimum,
            "max": "1",
            "patternCodeableConcept": {"coding": [coding]},
        }
        if code is None:
            element["binding"] = {"strength": "required", "valueSet": system.value_set_url}
        elements.append(element)
    return elements


def _reference(path: str, *targets: str, maximum: str | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {"id": path, "path": path, "min": 1}
    if maximum is not None:
        element["max"] = maximum
    element["type"] = [{"code": "Reference", "targetProfile": list(targets)}]
    return element


def _patient(path: str) -> dict[str, Any]:
    return _reference(path, *(f"{FHIR_BASE}/{name}" for name in rules.PATIENT_TYPES))


def _profile(
    url: str, resource_type: str, title: str, description: str, elements: list[dict[str, Any]]
) -> dict[str, Any]:
    profile_id = url.rsplit("/", 1)[-1]
    root = {"id": resource_type, "path": resource_type, "short": title, "definition": description}
    return {
        **canonical(
            "StructureDefinition",
            profile_id,
            url,
            title,
            description,
            narrative(title, description),
        ),
        "fhirVersion": terminology.FHIR_VERSION,
        "kind": "resource",
        "abstract": False,
        "type": resource_type,
        "baseDefinition": f"{FHIR_BASE}/{resource_type}",
        "derivation": "constraint",
        "differential": {"element": [root, *elements]},
    }


_KIND = local("ipt-careplan-kind")


def _plan_intent() -> dict[str, Any]:
    return {"id": "CarePlan.intent", "path": "CarePlan.intent", "fixedCode": "plan"}


def profiles() -> list[dict[str, Any]]:
    """The episode CarePlan, phase CarePlan and Goal profiles."""
    episode = _profile(
        terminology.EPISODE_PROFILE,
        "CarePlan",
        "IPT episode CarePlan",
        "A course of interpersonal psychotherapy: the treatment contract, problem areas, "
        "goals and relapse prevention plan of one episode.",
        [
            *_extension_slices(
                "CarePlan",
                (terminology.EXT_VARIANT, 0, "1"),
                (terminology.EXT_PLANNED_SESSIONS, 0, "1"),
                (terminology.EXT_SESSION_FREQUENCY, 0, "1"),
                (terminology.EXT_CONTRACT, 0, "*"),
                (terminology.EXT_PROBLEM_AREA, 0, str(codes.MAX_PROBLEM_AREAS)),
                (terminology.EXT_RELAPSE_PREVENTION, 0, "1"),
            ),
            _plan_intent(),
            *_category_slices(
                "CarePlan.category", ("kind", _KIND, terminology.CarePlanKind.EPISODE.value, 1)
            ),
            _patient("CarePlan.subject"),
        ],
    )
    phase = _profile(
        terminology.PHASE_PROFILE,
        "CarePlan",
        "IPT phase CarePlan",
        "One phase of a course of IPT, part of the episode CarePlan, with its sessions and "
        "homework as activities.",
        [
            *_extension_slices("CarePlan", (terminology.EXT_SESSION_RANGE, 0, "1")),
            _reference("CarePlan.partOf", terminology.EPISODE_PROFILE, maximum="1"),
            _plan_intent(),
            *_category_slices(
                "CarePlan.category",
                ("kind", _KIND, terminology.CarePlanKind.PHASE.value, 1),
                ("phase", local("ipt-phase"), None, 0),
            ),
            _patient("CarePlan.subject"),
            *_extension_slices(
                ACTIVITY_DETAIL,
                (terminology.EXT_SESSION_NUMBER, 0, "1"),
                (terminology.EXT_PHQ9_TOTAL, 0, "1"),
                (terminology.EXT_SESSION_TECHNIQUE, 0, "*"),
            ),
        ],
    )
    goal = _profile(
        terminology.GOAL_PROFILE,
        "Goal",
        "IPT goal",
        "A goal of a course of IPT: a symptom goal measured by a scale, or a goal of a "
        "problem area.",
        [
            *_extension_slices(
                "Goal",
                (terminology.EXT_GOAL_EPISODE, 1, "1"),
                (terminology.EXT_GOAL_PHASE, 0, "1"),
            ),
            *_category_slices(
                "Goal.category",
                ("kind", local("ipt-goal-kind"), None, 1),
                ("problemArea", local("ipt-problem-area"), None, 0),
            ),
            _patient("Goal.subject"),
        ],
    )
    return [episode, phase, goal, *_measurement_profiles()]


def _pattern(path: str, system: str, code: str) -> dict[str, Any]:
    return {
        "id": path,
        "path": path,
        "min": 1,
        "patternCodeableConcept": {"coding": [{"system": system, "code": code}]},
    }


def _measurement_profiles() -> list[dict[str, Any]]:
    """The QuestionnaireResponse and total-score Observation of an administration, and the
    Flag of a safety signal."""
    response = _profile(
        terminology.RESPONSE_PROFILE,
        "QuestionnaireResponse",
        "IPT rating-scale response",
        "The answers of one administration of a rating scale (PHQ-9, GAD-7) in a course of "
        "IPT; a total imported without its answers has no items.",
        [
            *_extension_slices(
                "QuestionnaireResponse",
                (terminology.EXT_ANSWERED_BY, 1, "1"),
                (terminology.EXT_SCORE_SOURCE, 1, "1"),
            ),
            _reference("QuestionnaireResponse.basedOn", terminology.EPISODE_PROFILE, maximum="1"),
            {
                "id": "QuestionnaireResponse.questionnaire",
                "path": "QuestionnaireResponse.questionnaire",
                "min": 1,
            },
            _patient("QuestionnaireResponse.subject"),
            {
                "id": "QuestionnaireResponse.authored",
                "path": "QuestionnaireResponse.authored",
                "min": 1,
            },
        ],
    )
    score = _profile(
        terminology.SCORE_PROFILE,
        "Observation",
        "IPT rating-scale total score",
        "The total score of one administration of a rating scale, with its severity band as "
        "interpretation and the item answers as components.",
        [
            *_extension_slices(
                "Observation",
                (terminology.EXT_ANSWERED_BY, 1, "1"),
                (terminology.EXT_SCORE_SOURCE, 1, "1"),
            ),
            _reference("Observation.basedOn", terminology.EPISODE_PROFILE, maximum="1"),
            _pattern("Observation.category", terminology.OBSERVATION_CATEGORY, "survey"),
            _patient("Observation.subject"),
            {
                "id": "Observation.effective[x]",
                "path": "Observation.effective[x]",
                "min": 1,
                "type": [{"code": "dateTime"}],
            },
            {
                "id": "Observation.value[x]",
                "path": "Observation.value[x]",
                "min": 1,
                "type": [{"code": "Quantity"}],
            },
            _reference("Observation.derivedFrom", terminology.RESPONSE_PROFILE, maximum="1"),
        ],
    )
    flag = _profile(
        terminology.SAFETY_FLAG_PROFILE,
        "Flag",
        "IPT safety signal",
        "A safety signal raised by an answer (PHQ-9 item 9 above 0): active until a clinician "
        "acknowledges it.",
        [
            *_extension_slices("Flag", (terminology.EXT_ACKNOWLEDGEMENT, 0, "1")),
            _pattern("Flag.category", terminology.FLAG_CATEGORY, "clinical"),
            _pattern(
                "Flag.code",
                local("ipt-safety-signal").url,
                terminology.SafetySignalKind.SELF_HARM_THOUGHTS.value,
            ),
            _patient("Flag.subject"),
        ],
    )
    return [response, score, flag]


def structure_definitions() -> list[dict[str, Any]]:
    """Every extension's StructureDefinition, then the three profiles."""
    return [*(extension_definition(ext) for ext in EXTENSIONS), *profiles()]
