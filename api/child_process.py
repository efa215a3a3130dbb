"""A process the server's master starts beside its web workers and keeps running: the
audit writer (``api.audit_writer``) and the delivery worker (``api.worker``).

It is started afresh (not forked from the master, which holds the app's connections),
started again whenever it exits, and stopped with the server: SIGTERM, then SIGKILL once
its patience has run out.
"""

from __future__ import annotations

import logging
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence


def _gone(pid: int) -> None:
    """A child process has ended: its live metrics go with it."""
    from api import metrics  # not at import: a child's own module stays light to start

    metrics.mark_process_dead(pid)


class ChildProcess:
    """One supervised child process.

    ``name`` is what the log calls it, ``command`` and ``env`` how it is started,
    ``restart_delay`` how long to wait before starting it again after it exits, and
    ``stop_patience`` how long :meth:`stop` waits for it after SIGTERM.
    """

    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        log: logging.Logger,
        env: Mapping[str, str] | None = None,
        restart_delay: float = 0.0,
        stop_patience: float = 10.0,
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = dict(env) if env is not None else None
        self.restart_delay = restart_delay
        self.stop_patience = stop_patience
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._watcher: threading.Thread | None = None

    def start(self, ready: Callable[[], bool] | None = None, patience: float = 120.0) -> None:
        """Start the process; with ``ready``, wait until it says so (RuntimeError if the
        process exits first or ``patience`` runs out); then keep it running."""
        self._spawn()
        if ready is not None:
            deadline = time.monotonic() + patience
            while not ready():
                process = self.process
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"the {self.name} exited at start")
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"the {self.name} did not get ready")
                time.sleep(0.02)
        self._watcher = threading.Thread(
            target=self._watch, name=f"{self.name.replace(' ', '-')}-watch", daemon=True
        )
        self._watcher.start()

    def _spawn(self) -> None:
        self.process = subprocess.Popen(self.command, env=self.env)

    def _watch(self) -> None:
        while not self._stopping.is_set():
            process = self.process
            if process is None:
                return
            try:
                status = process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            _gone(process.pid)
            if self._stopping.is_set():
                return
            self.log.error(f"the {self.name} exited; starting it again", extra={"status": status})
            # A stop that comes during the delay is not followed by a new start.
            if self._stopping.wait(self.restart_delay):
                return
            self._spawn()

    def stop(self, patience: float | None = None) -> None:
        """Stop the process (and its restarts): SIGTERM, then SIGKILL after ``patience``
        seconds (``stop_patience`` unless given)."""
        self._stopping.set()
        if self._watcher is not None:
            # No new start between this look at the process and its end.
            self._watcher.join(timeout=2)
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=self.stop_patience if patience is None else patience)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            _gone(process.pid)
