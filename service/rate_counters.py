"""Counters over a time window, shared by every process: in the database or in Redis.

A counter is named by an opaque key (a digest: no client-supplied text is stored). Its
window opens with its first hit and lasts a fixed number of seconds; the next hit after
that opens a new one. Both stores increment atomically, so that concurrent workers and
replicas never lose a count.
"""

from __future__ import annotations

import math
import random
from datetime import datetime, timedelta
from typing import Protocol

from sqlalchemy import case, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from service.db import Database
from service.models import RateCounter, utcnow

# Expired counters are removed by one increment in this many, so that the table stays
# small without a sweep of its own.
_SWEEP_ONE_IN = 50


class CounterStoreError(Exception):
    """The counters cannot be reached (the Redis server is down, for instance)."""


class CounterStore(Protocol):
    """Where the counters live."""

    def hit(self, key: str, seconds: int) -> tuple[int, int]:
        """Add one to ``key`` (a new window of ``seconds`` when none is open): the count
        and the whole seconds left in its window."""
        ...

    def peek(self, key: str) -> tuple[int, int]:
        """The count of ``key`` and the seconds left in its window; (0, 0) when none is open."""
        ...


def _seconds_until(moment: datetime, now: datetime) -> int:
    return max(1, math.ceil((moment - now).total_seconds()))


class DatabaseCounters:
    """Counters in the service's database (``rate_counters``): no other server needed."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def hit(self, key: str, seconds: int) -> tuple[int, int]:
        now = utcnow()
        expires = now + timedelta(seconds=seconds)
        dialect = self.database.engine.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        closed = RateCounter.expires_at <= now
        statement = (
            insert(RateCounter)
            .values(key=key, count=1, expires_at=expires)
            .on_conflict_do_update(
                index_elements=[RateCounter.key],
                set_={
                    "count": case((closed, 1), else_=RateCounter.count + 1),
                    "expires_at": case((closed, expires), else_=RateCounter.expires_at),
                },
            )
            .returning(RateCounter.count, RateCounter.expires_at)
        )
        with self.database.writing() as session:
            count, until = session.execute(statement).one()
            if random.randrange(_SWEEP_ONE_IN) == 0:
                session.execute(delete(RateCounter).where(RateCounter.expires_at < now))
        return int(count), _seconds_until(until, now)

    def peek(self, key: str) -> tuple[int, int]:
        now = utcnow()
        with self.database.reading() as session:
            row = session.execute(
                select(RateCounter.count, RateCounter.expires_at).where(RateCounter.key == key)
            ).first()
        if row is None:
            return 0, 0
        count, until = row
        if until <= now:
            return 0, 0
        return int(count), _seconds_until(until, now)


class RedisCounters:
    """Counters in Redis (``IPT_RATE_LIMIT_STORAGE``): INCR, and an expiry set once."""

    PREFIX = "ipt-careplans:rate:"

    def __init__(self, url: str) -> None:
        import redis

        self._errors = (redis.RedisError,)
        self.redis = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def hit(self, key: str, seconds: int) -> tuple[int, int]:
        name = self.PREFIX + key
        try:
            pipeline = self.redis.pipeline(transaction=True)
            pipeline.incr(name)
            pipeline.expire(name, seconds, nx=True)
            pipeline.ttl(name)
            count, _, left = pipeline.execute()
        except self._errors as error:
            raise CounterStoreError(type(error).__name__) from None
        return int(count), max(1, int(left))

    def peek(self, key: str) -> tuple[int, int]:
        name = self.PREFIX + key
        try:
            pipeline = self.redis.pipeline(transaction=True)
            pipeline.get(name)
            pipeline.ttl(name)
            value, left = pipeline.execute()
        except self._errors as error:
            raise CounterStoreError(type(error).__name__) from None
        if value is None:
            return 0, 0
        return int(value), max(1, int(left))

    def ping(self) -> None:
        """Reach the server; CounterStoreError when it does not answer."""
        try:
            self.redis.ping()
        except self._errors as error:
            raise CounterStoreError(type(error).__name__) from None
