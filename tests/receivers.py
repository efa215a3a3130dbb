"""A real notification receiver for the delivery tests: an HTTP server on 127.0.0.1 in a
thread, recording every notification it gets, whose answers a test can change (a status,
a delay, down altogether)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One notification as the receiver got it."""

    path: str
    headers: dict[str, str]
    bundle: dict[str, Any]
    at: float  # time.monotonic() when it arrived

    def parameter(self, name: str) -> Any:
        status = self.bundle["entry"][0]["resource"]
        for parameter in status["parameter"]:
            if parameter["name"] == name:
                return next(value for key, value in parameter.items() if key.startswith("value"))
        return None

    @property
    def kind(self) -> str:
        return str(self.parameter("type"))

    @property
    def subscription(self) -> str:
        reference = str(self.parameter("subscription")["reference"])
        return reference.rsplit("/", 1)[-1]

    @property
    def event_numbers(self) -> list[int]:
        status = self.bundle["entry"][0]["resource"]
        numbers = []
        for parameter in status["parameter"]:
            if parameter["name"] == "notification-event":
                for part in parameter["part"]:
                    if part["name"] == "event-number":
                        numbers.append(int(part["valueString"]))
        return numbers


@dataclass
class Receiver:
    """Answers ``status`` after ``delay`` seconds; ``location`` goes with a 3xx."""

    status: int = 200
    delay: float = 0.0
    location: str | None = None
    received: list[Received] = field(default_factory=list)
    # Notifications being answered now, per subscription, and the most there ever were.
    in_flight: dict[str, int] = field(default_factory=dict)
    most_in_flight: int = 0
    port: int = 0
    _server: ThreadingHTTPServer | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/notify"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                bundle = json.loads(self.rfile.read(length))
                got = Received(self.path, dict(self.headers.items()), bundle, time.monotonic())
                key = got.subscription
                with receiver._changed:
                    receiver.received.append(got)
                    receiver.in_flight[key] = receiver.in_flight.get(key, 0) + 1
                    receiver.most_in_flight = max(receiver.most_in_flight, receiver.in_flight[key])
                    receiver._changed.notify_all()
                try:
                    time.sleep(receiver.delay)
                    self.send_response(receiver.status)
                    if receiver.location:
                        self.send_header("Location", receiver.location)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                finally:
                    with receiver._changed:
                        receiver.in_flight[key] -= 1

            def log_message(self, format: str, *args: Any) -> None:
                return

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_port
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Down: the port refuses connections until :meth:`start` again."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def wait_for(self, condition: Callable[[list[Received]], bool], timeout: float = 10.0) -> None:
        """Wait until ``condition`` holds of what was received, or fail saying what came."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition(self.received):
                left = deadline - time.monotonic()
                if left <= 0:
                    kinds = [(r.kind, r.event_numbers) for r in self.received]
                    raise AssertionError(f"not received in {timeout} s; got {kinds}")
                self._changed.wait(min(left, 0.05))

    def of(self, subscription: str, kind: str | None = None) -> list[Received]:
        with self._changed:
            return [
                r
                for r in self.received
                if r.subscription == subscription and (kind is None or r.kind == kind)
            ]

    def numbers(self, subscription: str) -> list[int]:
        """Every event number delivered to ``subscription``, in the order received."""
        return [n for r in self.of(subscription, "event-notification") for n in r.event_numbers]
