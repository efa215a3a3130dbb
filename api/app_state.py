"""Objects built once per Flask app and kept in ``app.extensions``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar, cast

from flask import Flask

T = TypeVar("T")

# Re-entrant: building one object may need another (the token verifier needs the key).
_lock = threading.RLock()


def once_per_app(app: Flask, name: str, build: Callable[[], T]) -> T:
    """The app's ``name`` object, built by ``build`` on first use by whichever thread
    gets there first."""
    value: Any = app.extensions.get(name)
    if value is None:
        with _lock:
            value = app.extensions.get(name)
            if value is None:
                value = build()
                app.extensions[name] = value
    return cast(T, value)
