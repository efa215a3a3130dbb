"""The production server: gunicorn with threads, serving the app built from the settings."""

from __future__ import annotations

import os
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication


def default_workers() -> int:
    """One worker per core (at least two); each runs several threads."""
    return max(2, os.cpu_count() or 1)


class Server(BaseApplication):
    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application


def _after_fork(_server: Any, worker: Any) -> None:
    # Each worker opens its own database connections; none are shared across a fork.
    worker.app.application.extensions["ipt_database"].engine.dispose(close=False)


def _before_exit(_server: Any, _worker: Any) -> None:
    # Buffered audit records of reads are written before the worker goes.
    from api import audit

    audit.flush()


def serve(app: Flask, host: str, port: int, workers: int, threads: int) -> None:
    Server(
        app,
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "graceful_timeout": 30,
            "timeout": 60,
            "keepalive": 5,
            "post_fork": _after_fork,
            "worker_exit": _before_exit,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            "proc_name": "ipt-careplans",
        },
    ).run()
