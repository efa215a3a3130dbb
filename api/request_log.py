"""Request ids and one JSON log line per request: route, status, timing. Never patient data.

The logged route is the URL rule (``/api/v1/care-plans/<plan_id>``), not the URL: query
strings and ids stay out of the logs.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import sys
import time
import traceback
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, request

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")
log = logging.getLogger("ipt_careplans.requests")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and the record's extras."""

    _STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in self._STANDARD})
        if record.exc_info and record.exc_info[0] is not None:
            # The exception type and where it was raised; not its message, which can
            # quote stored values.
            entry["exception"] = record.exc_info[0].__name__
            entry["traceback"] = "".join(traceback.format_tb(record.exc_info[2]))
        return json.dumps(entry, default=str)


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("ipt_careplans")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def install(app: Flask) -> None:
    @app.before_request
    def start() -> None:
        given = request.headers.get("X-Request-ID")
        # 128 random bits, written like a uuid4's hex.
        g.request_id = given if given and _REQUEST_ID.match(given) else secrets.token_hex(16)
        g.started = time.perf_counter()

    @app.after_request
    def finish(response: Response) -> Response:
        request_id = g.get("request_id")
        response.headers["X-Request-ID"] = request_id or ""
        if log.isEnabledFor(logging.INFO):
            started = g.get("started")
            elapsed = time.perf_counter() - started if started is not None else 0.0
            # The record is made directly: the caller's file and line (which logging looks
            # up by walking the stack) say nothing a request line needs.
            record = log.makeRecord(
                log.name,
                logging.INFO,
                __file__,
                0,
                "request",
                (),
                None,
                extra={
                    "request_id": request_id,
                    "method": request.method,
                    "route": request.url_rule.rule if request.url_rule else "(no route)",
                    "status": response.status_code,
                    "duration_ms": round(elapsed * 1000, 2),
                },
            )
            log.handle(record)
        return response
