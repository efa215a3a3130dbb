"""Liveness and readiness probes."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify

from api.http import database

blp = Blueprint("health", __name__)


@blp.get("/healthz")
def healthz() -> Any:
    """The process is alive."""
    return jsonify(status="ok")


@blp.get("/readyz")
def readyz() -> Any:
    """The database answers and its schema is at the newest migration."""
    db = database()
    try:
        db.ping()
        current, head = db.current_revision(), db.head_revision()
    except Exception:  # any failure to reach the database means "not ready"
        return jsonify(status="unavailable", database="unreachable"), 503
    if current != head:
        return jsonify(
            status="unavailable",
            database="reachable",
            schema=f"at {current}, needs {head}: run `ipt-careplans db upgrade`",
        ), 503
    return jsonify(status="ok", database="reachable", schema=current)
