"""The production server: gunicorn with threads, serving the app built from the settings."""

from __future__ import annotations

import gc
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import BaseApplication

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# How long in-flight requests may run after SIGTERM; a pod's grace period must exceed it.
GRACEFUL_TIMEOUT_SECONDS = 30
_made_metrics_dir: str | None = None  # the directory serve made, removed on exit


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
    # What the worker inherits (the app, its modules and their tables) lives as long as
    # the worker: kept out of the garbage collector's full collections, which otherwise
    # walk all of it every few seconds under load and stop every thread while they do.
    gc.freeze()
    import sys

    sys.setswitchinterval(float(os.environ.get("IPT_SWITCH", "0.005")))
    # Each worker runs export jobs from its start (IPT_EXPORT_WORKER): a job whose process
    # died is taken up once its lease runs out, whether or not anyone polls it.
    exports = worker.app.application.extensions.get("ipt_export_worker")
    if exports is not None:
        exports.poke()


def _before_exit(_server: Any, worker: Any) -> None:
    from api import metrics

    # Its live gauges (the pool in use) leave the sums; its counters stay in them.
    metrics.mark_process_dead(worker.pid)


def _child_exit(_server: Any, worker: Any) -> None:
    # In the arbiter: also for a worker that was killed and never ran worker_exit.
    from api import metrics

    metrics.mark_process_dead(worker.pid)


_audit_writer: Any = None  # the audit writer serve started (api.audit_writer.WriterProcess)


_delivery_worker: Any = None  # the delivery worker serve started (api.worker.WorkerProcess)


def _on_exit(_server: Any) -> None:
    # The delivery worker ends the notifications under way and records them.
    if _delivery_worker is not None:
        _delivery_worker.stop()
    # The workers have gone: the audit writer has answered all they sent.
    if _audit_writer is not None:
        _audit_writer.stop()
    # The metrics directory serve made for this run goes with it.
    if _made_metrics_dir is not None:
        shutil.rmtree(_made_metrics_dir, ignore_errors=True)


def prepare_metrics_dir(given: str | None) -> str:
    """Where the workers' metrics are counted: the checked PROMETHEUS_MULTIPROC_DIR, or a
    fresh temporary directory (removed on exit) when it is not set. Called before the app
    is built, so that every worker forked later counts into it."""
    if given:
        # Files left by an earlier run would add its counts to this one's.
        for stale in Path(given).glob("*.db"):
            stale.unlink(missing_ok=True)
        return given
    global _made_metrics_dir
    _made_metrics_dir = tempfile.mkdtemp(prefix="ipt-careplans-metrics-")
    os.environ[MULTIPROC_ENV] = _made_metrics_dir
    return _made_metrics_dir


def serve(app: Flask, host: str, port: int, workers: int, threads: int) -> None:
    global _audit_writer
    from api.audit_writer import WriterProcess

    # One audit writer for all the workers (see api.audit_writer), before they are forked.
    database = app.extensions["ipt_database"]
    _audit_writer = WriterProcess(database.url.render_as_string(hide_password=False))
    _audit_writer.start()
    app.extensions["ipt_audit"].use_writer(_audit_writer.path)
    if app.extensions["ipt_settings"].delivers_in_process:
        global _delivery_worker
        from api.worker import WorkerProcess

        _delivery_worker = WorkerProcess()
        _delivery_worker.start()
    Server(
        app,
        {
            "bind": f"{host}:{port}",
            "workers": workers,
            "threads": threads,
            "worker_class": "gthread",
            "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
            "timeout": 60,
            "keepalive": 5,
            "post_fork": _after_fork,
            "worker_exit": _before_exit,
            "child_exit": _child_exit,
            "on_exit": _on_exit,
            "accesslog": None,
            "errorlog": "-",
            "loglevel": "warning",
            "proc_name": "ipt-careplans",
        },
    ).run()
