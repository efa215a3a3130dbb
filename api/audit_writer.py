"""One audit writer per server: the workers' requests hand their audit records to it and
wait until it has committed them.

Under ``serve`` several worker processes answer requests. Each committing its own
requests' records would make many small transactions, and on SQLite the workers would
queue for its one write lock while each, holding it, waits for its own interpreter lock
to come back. Instead the server starts one writer process beside its workers. A request
sends its records over a local socket and waits for the answer; the writer takes every
record that has arrived from any worker, commits them in one transaction, and then answers
each request: committed, or not (the request then answers 503 instead of its data). A
record is acknowledged only once it is on disk, so a writer, worker or server killed at
any moment loses no record of a response that was sent.

The server's master process keeps the writer running (:class:`WriterProcess`), and
restarts it if it dies; requests that come meanwhile wait for it a moment, then fail
closed.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from api.child_process import ChildProcess

log = logging.getLogger("ipt_careplans.audit")

SOCKET_ENV = "IPT_AUDIT_WRITER_SOCKET"
_HEADER = struct.Struct("!I")
_COMMITTED, _REFUSED = b"\x00", b"\x01"
# Fields of an audit row that are instants (sent as ISO 8601 text).
_INSTANTS = ("started", "recorded")
# How long a request waits for a writer that is not (yet, or again) listening.
CONNECT_PATIENCE_SECONDS = 10.0
# How long the writer waits for more requests' records before it commits those it has
# (IPT_AUDIT_GATHER_MS), and how many requests' records it commits at most at once.
GATHER_SECONDS = 0.002
MAX_GATHERED = 512
# How often the writer's process moves what it committed from the audit journal into the
# trail (IPT_AUDIT_MOVE_SECONDS), unless a batch's worth is waiting sooner.
MOVE_SECONDS = 1.0
# The largest message a writer reads: one request's records, far below it.
MAX_MESSAGE_BYTES = 16 * 1024 * 1024

# A request's records: (row, patient hint) pairs, as api.audit makes them.
Records = list[tuple[dict[str, Any], tuple[str, str] | None]]


def _encode(records: Records) -> bytes:
    items = []
    for row, hint in records:
        sent = dict(row)
        for name in _INSTANTS:
            value = sent.get(name)
            if isinstance(value, datetime):
                sent[name] = value.isoformat()
        items.append([sent, list(hint) if hint else None])
    body = json.dumps(items, separators=(",", ":")).encode()
    return _HEADER.pack(len(body)) + body


def _decode(body: bytes) -> Records:
    records: Records = []
    for sent, hint in json.loads(body):
        for name in _INSTANTS:
            value = sent.get(name)
            if isinstance(value, str):
                sent[name] = datetime.fromisoformat(value)
        records.append((sent, (str(hint[0]), str(hint[1])) if hint else None))
    return records


class WriterUnavailable(Exception):
    """The writer could not be reached or did not commit the records."""


class WriterClient:
    """A worker's side: each thread keeps one connection to the writer."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._local = threading.local()

    def commit(self, records: Records) -> None:
        """Send a request's records and wait until the writer has committed them."""
        message = _encode(records)
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.sendall(message)
                answer = connection.recv(1)
            except OSError:
                answer = b""
            if answer == _COMMITTED:
                return
            self._drop()
            if answer == _REFUSED:
                raise WriterUnavailable("the writer could not commit the records")
            # The connection broke (a restarted writer): once more on a new one. A writer
            # that died after committing gets the records twice; a record's id is its
            # primary key, so the second copy is refused, and the first one stands.
            if attempt == 2:
                raise WriterUnavailable("the writer did not answer")

    def _connection(self) -> socket.socket:
        connection: socket.socket | None = getattr(self._local, "connection", None)
        if connection is not None and getattr(self._local, "pid", None) == os.getpid():
            return connection
        deadline = time.monotonic() + CONNECT_PATIENCE_SECONDS
        while True:
            connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                connection.connect(self.path)
                break
            except OSError as error:
                connection.close()
                if time.monotonic() >= deadline:
                    raise WriterUnavailable("the writer is not listening") from error
                time.sleep(0.05)
        self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()


class _Peer:
    """A worker thread's connection, and the bytes of its message read so far."""

    def __init__(self, connection: socket.socket) -> None:
        self.connection = connection
        self.buffer = b""

    def messages(self) -> list[bytes] | None:
        """The complete messages received; None once the peer has gone."""
        try:
            data = self.connection.recv(1 << 20)
        except BlockingIOError:
            return []
        except OSError:
            return None
        if not data:
            return None
        self.buffer += data
        found = []
        while len(self.buffer) >= _HEADER.size:
            (size,) = _HEADER.unpack_from(self.buffer)
            if size > MAX_MESSAGE_BYTES:
                return None
            if len(self.buffer) < _HEADER.size + size:
                break
            found.append(self.buffer[_HEADER.size : _HEADER.size + size])
            self.buffer = self.buffer[_HEADER.size + size :]
        return found


def run_writer(
    path: str, commit: Callable[[list[Records]], list[bool]], gather: float = GATHER_SECONDS
) -> None:
    """Listen at ``path`` and commit what arrives, every waiting request's records in one
    call of ``commit`` (which says, per request, whether its records were committed),
    until SIGTERM."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the master stops the writer last
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    os.chmod(path, 0o600)
    listener.listen(1024)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    parent = os.getppid()
    try:
        # A writer whose server has gone (killed, without stopping it) stops too.
        while not stopping.is_set() and os.getppid() == parent:
            waiting: list[tuple[_Peer, Records]] = []
            _receive(listener, selector, waiting, timeout=0.5)
            if not waiting:
                continue
            # Gather what else comes in a moment: under load, one commit for many
            # requests instead of one each; alone, a request waits that much longer.
            deadline = time.monotonic() + gather
            while len(waiting) < MAX_GATHERED:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                _receive(listener, selector, waiting, timeout=left)
            outcomes = commit([records for _, records in waiting])
            for (peer, _), committed in zip(waiting, outcomes, strict=True):
                try:
                    peer.connection.sendall(_COMMITTED if committed else _REFUSED)
                except OSError:
                    continue  # the request has gone; its records are committed
    finally:
        listener.close()
        if os.path.exists(path):
            os.unlink(path)


def _receive(
    listener: socket.socket,
    selector: selectors.BaseSelector,
    waiting: list[tuple[_Peer, Records]],
    timeout: float,
) -> None:
    """Add the messages that arrive within ``timeout`` to ``waiting``; take new peers."""
    for key, _ in selector.select(timeout=timeout):
        if key.data is None:
            _accept(listener, selector)
            continue
        peer: _Peer = key.data
        messages = peer.messages()
        if messages is None:
            selector.unregister(peer.connection)
            peer.connection.close()
            continue
        for message in messages:
            try:
                waiting.append((peer, _decode(message)))
            except (ValueError, TypeError, KeyError, IndexError):
                log.error("an audit message could not be read")
                peer.connection.sendall(_REFUSED)


def _accept(listener: socket.socket, selector: selectors.BaseSelector) -> None:
    try:
        connection, _ = listener.accept()
    except BlockingIOError:
        return
    connection.setblocking(False)
    selector.register(connection, selectors.EVENT_READ, _Peer(connection))


_DATABASE_ENV = "IPT_AUDIT_WRITER_DATABASE_URL"


def _writer_main() -> None:
    """The writer process (``python -m api.audit_writer PATH``): its own connection to
    the database its server uses (given in the environment: a password stays out of the
    process list)."""
    from api.audit import AuditLog
    from service.db import Database

    database = Database(os.environ[_DATABASE_ENV])
    audit_log = AuditLog(database)
    gather = float(os.environ.get("IPT_AUDIT_GATHER_MS", GATHER_SECONDS * 1000)) / 1000
    audit_log.move_in_background(float(os.environ.get("IPT_AUDIT_MOVE_SECONDS", MOVE_SECONDS)))
    run_writer(sys.argv[1], audit_log.commit_many, gather)


class WriterProcess:
    """The writer, started and kept running by the server's master process."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.directory = tempfile.mkdtemp(prefix="ipt-careplans-audit-")
        os.chmod(self.directory, 0o700)
        self.path = os.path.join(self.directory, "writer.sock")
        self._child = ChildProcess(
            "audit writer",
            [sys.executable, "-m", "api.audit_writer", self.path],
            log=log,
            env={**os.environ, _DATABASE_ENV: self.database_url},
            stop_patience=10.0,
        )

    def start(self, patience: float = 120.0) -> None:
        """Start the writer and wait until it listens: no worker answers a request before
        its records can be committed."""
        self._child.start(ready=lambda: os.path.exists(self.path), patience=patience)

    def stop(self) -> None:
        """Stop the writer once the workers have gone (it answers what is in flight)."""
        self._child.stop()
        try:
            os.rmdir(self.directory)
        except OSError:
            return


if __name__ == "__main__":
    _writer_main()
