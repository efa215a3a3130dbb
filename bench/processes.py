"""Servers under test, started as deployed, and the memory they hold."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            text = (task / "children").read_text()
            found.extend(int(child) for child in text.split())
    except OSError:
        return found
    return found


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Server:
    """A server process (and its workers) on a free port, stopped with SIGTERM."""

    def __init__(
        self, name: str, command: list[str], env: Mapping[str, str], log: Path, ready: str
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._command = [part.replace("{port}", str(self.port)) for part in command]
        self._env = {**os.environ, **env, "IPT_PUBLIC_BASE_URL": self.url}
        self._log = log
        self._ready = ready
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        log = self._log.open("wb")
        self.process = subprocess.Popen(
            self._command, env=self._env, stdout=log, stderr=log, cwd=ROOT
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start: see {self._log}")
            try:
                with urllib.request.urlopen(self.url + self._ready, timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not become ready: see {self._log}")

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def rss_mib(self) -> float:
        """Resident memory of the server and all its workers, in MiB."""
        if self.process is None:
            return 0.0
        pids = [self.process.pid, *_children(self.process.pid)]
        return sum(_rss_kib(pid) for pid in pids) / 1024


class MemoryWatch:
    """Samples a server's resident memory while a scenario runs; keeps the peak."""

    def __init__(self, server: Server, every: float = 0.25) -> None:
        self.server = server
        self.every = every
        self.peak = 0.0
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = 0.0

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = self.server.rss_mib()
            self.peak = max(self.peak, rss)
            self.samples.append((time.monotonic() - self._started, rss))
            self._stop.wait(self.every)

    def __enter__(self) -> MemoryWatch:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
