"""Rate limits of the token endpoint, against guessing client secrets.

Three counters over one-minute windows (a window opens with its first count), kept in a
store every worker and replica shares (the database by default, Redis with
``IPT_RATE_LIMIT_STORAGE``):

- every request from one source address (``IPT_TOKEN_ATTEMPTS_PER_ADDRESS``);
- failed authentications of one client id from one address
  (``IPT_TOKEN_FAILURES_PER_CLIENT_ADDRESS``): past it, that client id is refused from that
  address, the right secret included, until the window ends;
- failed authentications of one client id from every address together
  (``IPT_TOKEN_FAILURES_PER_CLIENT``, higher): a guess spread over many addresses.

Only failures count against a client id, so a client that authenticates is never slowed by
its own traffic, and an attacker at one address locks a client id out of that address
only; the whole client id is refused only under a distributed attack, and for one minute.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from flask import Flask

from api.app_state import once_per_app
from api.client_address import source_address as client_address
from api.config import Settings
from service.db import Database
from service.rate_counters import CounterStore, DatabaseCounters, RedisCounters

WINDOW_SECONDS = 60
_EXTENSION = "ipt_token_throttle"


def source_address() -> str:
    """The address a request comes from, as the rate limits count it: the same address the
    audit trail records (through trusted proxies only, ``api.client_address``)."""
    return client_address() or "unknown"


class Limited(Exception):
    """A request refused by a rate limit, and how many seconds until it may be tried again."""

    def __init__(self, description: str, retry_after: int) -> None:
        super().__init__(description)
        self.description = description
        self.retry_after = retry_after


@dataclass
class TokenThrottle:
    """The token endpoint's limits over one counter store."""

    store: CounterStore
    per_address: int
    per_client_address: int
    per_client: int

    @classmethod
    def build(cls, settings: Settings, database: Database) -> TokenThrottle:
        store: CounterStore
        if settings.rate_limit_storage:
            store = RedisCounters(settings.rate_limit_storage)
        else:
            store = DatabaseCounters(database)
        return cls(
            store,
            settings.token_attempts_per_address,
            settings.token_failures_per_client_address,
            settings.token_failures_per_client,
        )

    @staticmethod
    def _key(limit: str, subject: str) -> str:
        text = f"{limit}\x00{subject}"
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def attempt(self, address: str) -> None:
        """Count a request from ``address``; Limited past the address's limit."""
        count, left = self.store.hit(self._key("address", address), WINDOW_SECONDS)
        if count > self.per_address:
            raise Limited(
                f"too many token requests from this address: try again in {left} seconds", left
            )

    def check_client(self, client_id: str, address: str) -> None:
        """Limited when ``client_id`` has failed too often (from ``address`` or overall)."""
        for key, limit in (
            (self._key("client-address", f"{client_id}\x00{address}"), self.per_client_address),
            (self._key("client", client_id), self.per_client),
        ):
            count, left = self.store.peek(key)
            if count >= limit:
                raise Limited(
                    f"too many failed authentications of this client: try again in {left} seconds",
                    left,
                )

    def failed(self, client_id: str, address: str) -> None:
        """Count a failed authentication of ``client_id`` from ``address``."""
        self.store.hit(self._key("client-address", f"{client_id}\x00{address}"), WINDOW_SECONDS)
        self.store.hit(self._key("client", client_id), WINDOW_SECONDS)


def throttle_for(app: Flask) -> TokenThrottle:
    """The app's token throttle, built once per app."""
    return once_per_app(
        app,
        _EXTENSION,
        lambda: TokenThrottle.build(app.extensions["ipt_settings"], app.extensions["ipt_database"]),
    )
