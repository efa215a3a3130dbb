"""The rating scales the service records administrations of: PHQ-9 and GAD-7.

Each instrument is declared once, here, with everything the service derives from it: its
items and their LOINC codes, the answer codes and their scores, the range of the total,
the severity bands, and the rules that judge a course of scores (the minimal clinically
important difference, response and remission). Validation, the progress rules, the FHIR
Questionnaire, QuestionnaireResponse and Observation mappings, the conformance resources
and the OpenAPI document all read these declarations, so a third instrument is one more
entry in ``INSTRUMENTS``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from itertools import pairwise

LOINC = "http://loinc.org"


@dataclass(frozen=True)
class AnswerOption:
    """One answer of an item: its LOINC answer code (LA…), its text and its score."""

    code: str
    display: str
    score: int


# LOINC answer list LL358-3: how often over the last two weeks.
FREQUENCY_ANSWERS = (
    AnswerOption("LA6568-5", "Not at all", 0),
    AnswerOption("LA6569-3", "Several days", 1),
    AnswerOption("LA6570-1", "More than half the days", 2),
    AnswerOption("LA6571-9", "Nearly every day", 3),
)
FREQUENCY_ANSWER_LIST = "LL358-3"

# LOINC answer list LL359-1: how difficult the problems made daily life. Not scored.
DIFFICULTY_ANSWERS = (
    AnswerOption("LA6572-7", "Not difficult at all", 0),
    AnswerOption("LA6573-5", "Somewhat difficult", 1),
    AnswerOption("LA6575-0", "Very difficult", 2),
    AnswerOption("LA6574-3", "Extremely difficult", 3),
)
DIFFICULTY_ANSWER_LIST = "LL359-1"


@dataclass(frozen=True)
class Item:
    """One question: ``link_id`` names it in the native API and in QuestionnaireResponse."""

    link_id: str
    code: str
    text: str
    answers: tuple[AnswerOption, ...] = FREQUENCY_ANSWERS

    @property
    def max_score(self) -> int:
        return max(a.score for a in self.answers)

    def answer(self, score: int) -> AnswerOption:
        return next(a for a in self.answers if a.score == score)


@dataclass(frozen=True)
class Band:
    """A severity band: totals from ``low`` to ``high`` inclusive."""

    code: str
    display: str
    low: int
    high: int


@dataclass(frozen=True)
class Instrument:
    """A rating scale and the rules that judge a course of its scores."""

    key: str  # the name used in the native API: phq-9, gad-7
    name: str  # PHQ-9
    title: str
    panel_code: str  # LOINC code of the panel (the Questionnaire)
    total_code: str  # LOINC code of the total score (the Observation)
    total_display: str
    items: tuple[Item, ...]  # the scored items, in order
    difficulty: Item | None  # the functional difficulty item: answered, never scored
    bands: tuple[Band, ...]
    # The smallest change of the total a patient notices: a change of at least this many
    # points from the baseline is improving or worsening.
    minimal_important_change: int
    # Remission: a total below this. Response: a total at most this fraction of the
    # baseline (a reduction of at least half).
    remission_below: int
    response_fraction: float = 0.5
    # The item whose answer above 0 raises a safety signal (PHQ-9 item 9), if any.
    safety_item: str | None = None

    @property
    def min_score(self) -> int:
        return 0

    @property
    def max_score(self) -> int:
        return sum(item.max_score for item in self.items)

    @property
    def all_items(self) -> tuple[Item, ...]:
        return self.items + ((self.difficulty,) if self.difficulty else ())

    def item(self, link_id: str) -> Item | None:
        return next((i for i in self.all_items if i.link_id == link_id), None)

    def band(self, total: int) -> Band:
        return next(b for b in self.bands if b.low <= total <= b.high)

    def total(self, answers: dict[str, int]) -> int:
        """The total of a complete set of answers to the scored items."""
        return sum(answers[item.link_id] for item in self.items)

    def in_remission(self, total: int) -> bool:
        return total < self.remission_below

    def is_response(self, baseline: int, total: int) -> bool:
        return baseline > 0 and total <= baseline * self.response_fraction


_DIFFICULTY_TEXT = (
    "If you checked off any problems, how difficult have these problems made it for you to "
    "do your work, take care of things at home, or get along with other people?"
)


def _items(prefix: str, questions: tuple[tuple[str, str], ...]) -> tuple[Item, ...]:
    return tuple(
        Item(f"{prefix}-{number}", code, text)
        for number, (code, text) in enumerate(questions, start=1)
    )


PHQ9 = Instrument(
    key="phq-9",
    name="PHQ-9",
    title="Patient Health Questionnaire-9 (PHQ-9)",
    panel_code="44249-1",
    total_code="44261-6",
    total_display="PHQ-9 total score",
    items=_items(
        "phq-9",
        (
            ("44250-9", "Little interest or pleasure in doing things"),
            ("44255-8", "Feeling down, depressed, or hopeless"),
            ("44259-0", "Trouble falling or staying asleep, or sleeping too much"),
            ("44254-1", "Feeling tired or having little energy"),
            ("44251-7", "Poor appetite or overeating"),
            (
                "44258-2",
                "Feeling bad about yourself - or that you are a failure or have let yourself "
                "or your family down",
            ),
            (
                "44252-5",
                "Trouble concentrating on things, such as reading the newspaper or watching "
                "television",
            ),
            (
                "44253-3",
                "Moving or speaking so slowly that other people could have noticed. Or the "
                "opposite - being so fidgety or restless that you have been moving around a "
                "lot more than usual",
            ),
            (
                "44260-8",
                "Thoughts that you would be better off dead, or of hurting yourself in some way",
            ),
        ),
    ),
    difficulty=Item("phq-9-difficulty", "69722-7", _DIFFICULTY_TEXT, DIFFICULTY_ANSWERS),
    bands=(
        Band("none", "None-minimal", 0, 4),
        Band("mild", "Mild", 5, 9),
        Band("moderate", "Moderate", 10, 14),
        Band("moderately-severe", "Moderately severe", 15, 19),
        Band("severe", "Severe", 20, 27),
    ),
    minimal_important_change=5,
    remission_below=5,
    safety_item="phq-9-9",
)

GAD7 = Instrument(
    key="gad-7",
    name="GAD-7",
    title="Generalized Anxiety Disorder 7-item scale (GAD-7)",
    panel_code="69737-5",
    total_code="70274-6",
    total_display="GAD-7 total score",
    items=_items(
        "gad-7",
        (
            ("69725-0", "Feeling nervous, anxious, or on edge"),
            ("68509-9", "Not being able to stop or control worrying"),
            ("69733-4", "Worrying too much about different things"),
            ("69734-2", "Trouble relaxing"),
            ("69735-9", "Being so restless that it is hard to sit still"),
            ("69689-8", "Becoming easily annoyed or irritable"),
            ("69736-7", "Feeling afraid, as if something awful might happen"),
        ),
    ),
    difficulty=Item("gad-7-difficulty", "69722-7", _DIFFICULTY_TEXT, DIFFICULTY_ANSWERS),
    bands=(
        Band("none", "Minimal", 0, 4),
        Band("mild", "Mild", 5, 9),
        Band("moderate", "Moderate", 10, 14),
        Band("severe", "Severe", 15, 21),
    ),
    minimal_important_change=4,
    remission_below=5,
)

INSTRUMENTS: dict[str, Instrument] = {i.key: i for i in (PHQ9, GAD7)}
# The instrument whose total a goal target names (by LOINC code), if it is one of them.
BY_TOTAL_CODE: dict[str, Instrument] = {i.total_code: i for i in INSTRUMENTS.values()}
BY_PANEL_CODE: dict[str, Instrument] = {i.panel_code: i for i in INSTRUMENTS.values()}


class AnsweredBy(StrEnum):
    """Who gave the answers of an administration."""

    PATIENT = "patient"  # self-report
    CLINICIAN = "clinician"  # read out and answered in the session
    CARER = "carer"  # a parent or carer (adolescent IPT)


class AdministrationSource(StrEnum):
    """How an administration's total came to be."""

    ITEMS = "items"  # computed from the item answers
    TOTAL_ONLY = "total-only"  # imported from elsewhere: a total without its items


def _check_declarations() -> None:
    """The declarations are consistent: bands tile the range, link ids are distinct."""
    for instrument in INSTRUMENTS.values():
        bands = instrument.bands
        tiled = (
            bands[0].low == instrument.min_score
            and bands[-1].high == instrument.max_score
            and all(a.high + 1 == b.low for a, b in pairwise(bands))
        )
        link_ids = [i.link_id for i in instrument.all_items]
        if not tiled or len(set(link_ids)) != len(link_ids):
            raise ValueError(f"the declaration of {instrument.name} is inconsistent")
        if instrument.safety_item is not None and instrument.item(instrument.safety_item) is None:
            raise ValueError(f"{instrument.name} names a safety item it does not have")


_check_declarations()
