"""Rendered response bodies kept in the process, one per record, least recently used first out.

A body is stored under its record's id with the key it is a function of (for a plan's
progress: the plan's version, the time of its last write and the day it was computed). A
read whose key matches is served the stored bytes; any other key is a miss, so an entry
left behind by a change is never served: the next read of that record replaces it.

Shared by the request threads of a process (gunicorn's gthread workers): every access
holds one lock, for a dictionary operation only. Each process has its own cache.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class RenderedCache:
    """At most ``entries`` bodies (0: none are kept, every read is a miss)."""

    def __init__(self, entries: int) -> None:
        if entries < 0:
            raise ValueError(f"a cache holds 0 or more entries, not {entries}")
        self.entries = entries
        self._lock = threading.Lock()
        self._bodies: OrderedDict[str, tuple[Hashable, bytes]] = OrderedDict()

    def get(self, record_id: str, key: Hashable) -> bytes | None:
        """The body stored for this record under this key, or None."""
        if not self.entries:
            return None
        with self._lock:
            found = self._bodies.get(record_id)
            if found is None or found[0] != key:
                return None
            self._bodies.move_to_end(record_id)
            return found[1]

    def put(self, record_id: str, key: Hashable, body: bytes) -> None:
        """Keep this body for the record (replacing what was kept for it), dropping the
        least recently used records beyond the bound."""
        if not self.entries:
            return
        with self._lock:
            self._bodies[record_id] = (key, body)
            self._bodies.move_to_end(record_id)
            while len(self._bodies) > self.entries:
                self._bodies.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._bodies)

    def clear(self) -> None:
        with self._lock:
            self._bodies.clear()
