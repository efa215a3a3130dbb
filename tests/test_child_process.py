"""The supervisor of the processes ``serve`` runs beside its web workers (the audit writer
and the delivery worker): started, waited for, restarted when they die, stopped with
patience. Real child processes, small Python programs."""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from api.child_process import ChildProcess

log = logging.getLogger("tests.child_process")


def _sleeper(marker: Path, *, ignore_term: bool = False) -> list[str]:
    """A child that appends its pid to ``marker`` and sleeps (deaf to SIGTERM if asked)."""
    program = (
        "import os, signal, time, sys\n"
        + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignore_term else "")
        + "with open(sys.argv[1], 'a') as f: f.write(f'{os.getpid()}\\n')\n"
        + "time.sleep(120)\n"
    )
    return [sys.executable, "-c", program, str(marker)]


def _pids(marker: Path) -> list[int]:
    return [int(line) for line in marker.read_text().split()] if marker.exists() else []


def _wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (not yet reaped) counts as gone.
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split(")")[-1].split()[0] != "Z"


def test_a_child_that_dies_is_started_again_and_stop_ends_it(tmp_path: Path) -> None:
    marker = tmp_path / "pids"
    child = ChildProcess("sleeper", _sleeper(marker), log=log)
    child.start(ready=lambda: len(_pids(marker)) == 1, patience=15)
    first = _pids(marker)[0]
    os.kill(first, signal.SIGKILL)
    _wait_for(lambda: len(_pids(marker)) == 2)
    second = _pids(marker)[1]
    assert second != first and _alive(second)
    child.stop()
    assert not _alive(second)
    time.sleep(1)  # the watcher has stopped: no third start
    assert len(_pids(marker)) == 2


def test_a_restart_waits_its_delay_and_a_stop_meanwhile_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "pids"
    child = ChildProcess("sleeper", _sleeper(marker), log=log, restart_delay=2.0)
    child.start(ready=lambda: len(_pids(marker)) == 1, patience=15)
    os.kill(_pids(marker)[0], signal.SIGKILL)
    time.sleep(1)
    assert len(_pids(marker)) == 1  # still within the delay
    child.stop()
    time.sleep(2)
    assert len(_pids(marker)) == 1


def test_stop_kills_a_child_deaf_to_sigterm_once_its_patience_is_over(tmp_path: Path) -> None:
    marker = tmp_path / "pids"
    child = ChildProcess("deaf", _sleeper(marker, ignore_term=True), log=log, stop_patience=30)
    child.start(ready=lambda: len(_pids(marker)) == 1, patience=15)
    started = time.monotonic()
    child.stop(patience=0.5)
    assert 0.5 <= time.monotonic() - started < 10
    assert not _alive(_pids(marker)[0])


def test_a_child_that_exits_before_it_is_ready_fails_the_start(tmp_path: Path) -> None:
    child = ChildProcess("quitter", [sys.executable, "-c", "raise SystemExit(3)"], log=log)
    with pytest.raises(RuntimeError, match="the quitter exited at start"):
        child.start(ready=lambda: False, patience=15)


def test_a_child_that_never_gets_ready_fails_the_start(tmp_path: Path) -> None:
    marker = tmp_path / "pids"
    child = ChildProcess("sleeper", _sleeper(marker), log=log)
    try:
        with pytest.raises(RuntimeError, match="the sleeper did not get ready"):
            child.start(ready=lambda: False, patience=0.5)
    finally:
        child.stop(patience=5)
