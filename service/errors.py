"""The errors the domain raises. Each names what was wrong; the API turns them into responses."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldProblem:
    """One invalid field: its path (e.g. ``problem_areas.2``) and what is wrong with it."""

    field: str
    message: str


class DomainError(Exception):
    """Base of every error the domain raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RuleViolation(DomainError):
    """The request is well formed but breaks a rule of the IPT domain."""

    def __init__(self, message: str, problems: list[FieldProblem] | None = None) -> None:
        super().__init__(message)
        self.problems = problems or []

    @classmethod
    def on(cls, field: str, message: str) -> RuleViolation:
        """A violation caused by a single field."""
        return cls(message, [FieldProblem(field, message)])


class NotFound(DomainError):
    """The addressed plan, phase, goal, homework or session does not exist."""


class Gone(DomainError):
    """The addressed resource existed and was deleted."""


class VersionMismatch(DomainError):
    """The caller's expected version is not the current one (optimistic locking)."""

    def __init__(self, message: str, current_version: int) -> None:
        super().__init__(message)
        self.current_version = current_version


class Conflict(DomainError):
    """The change conflicts with the current state (a duplicate, a dependent record...)."""
