"""Who is calling: the principal every request is authorised and audited as."""

from __future__ import annotations

from dataclasses import dataclass, field

from flask import g


@dataclass(frozen=True)
class Principal:
    """The caller of a request, from its access token.

    ``client_id`` is the OAuth client; ``user`` the end user when the token names one (an
    external issuer's ``sub`` or ``fhirUser``); ``patient`` the patient compartment the
    token is bound to, if any; ``scopes`` the granted SMART scopes as written.
    """

    client_id: str
    scopes: frozenset[str] = field(default_factory=frozenset)
    user: str | None = None
    patient: str | None = None
    issuer: str = "self"

    @property
    def actor(self) -> str:
        """The name recorded with every change and audit record."""
        return self.user or self.client_id


def current_principal() -> Principal | None:
    """The authenticated caller of the current request, or None before authentication."""
    principal: Principal | None = g.get("principal")
    return principal
