"""Posting one notification to a subscription's receiver, safely.

The endpoint is checked again when each notification is sent (``service.endpoint_policy``)
and the connection is made to an address that check accepted, never to whatever the host
name resolves to a moment later: a name re-pointed at a private address after the check
(DNS rebinding) reaches nothing. TLS still verifies the certificate against the host name.

Redirects are not followed (a 3xx is a failure: a receiver cannot send the service on to
another address), the whole exchange must end within the subscription's timeout, and at
most :data:`RESPONSE_LIMIT` bytes of the answer are read: a receiver cannot hold a worker
longer, or make it read more, than that.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from service.endpoint_policy import (
    EndpointRefused,
    Network,
    Resolver,
    check,
    system_resolver,
)

RESPONSE_LIMIT = 4096
CONTENT_TYPE = "application/fhir+json"
USER_AGENT = "ipt-careplans-subscriptions"
# Headers the service sets itself: a channel header of the same name is not sent.
_OWN_HEADERS = frozenset({"content-type", "content-length", "host", "transfer-encoding"})


@dataclass(frozen=True)
class Answer:
    """How one attempt ended: the receiver's status, or why there was none.

    ``error`` never quotes the endpoint's path or query (they can hold a secret): only
    what went wrong and, for a refusal, the policy's reason.
    """

    status: int | None
    error: str | None
    address: str | None
    refused: bool = False

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class _Deadline:
    def __init__(self, seconds: float) -> None:
        self.ends = time.monotonic() + seconds

    def left(self) -> float:
        left = self.ends - time.monotonic()
        if left <= 0:
            raise TimeoutError("the receiver did not answer within the subscription's timeout")
        return left


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection to one checked address, whatever its host name resolves to now."""

    def __init__(self, host: str, port: int, address: str, deadline: _Deadline) -> None:
        super().__init__(host, port, timeout=deadline.left())
        self.address = address
        self.deadline = deadline

    def _open(self) -> socket.socket:
        return socket.create_connection((self.address, self.port), timeout=self.deadline.left())

    def connect(self) -> None:
        self.sock = self._open()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _PinnedHTTPSConnection(_PinnedHTTPConnection):
    def __init__(self, host: str, port: int, address: str, deadline: _Deadline) -> None:
        super().__init__(host, port, address, deadline)
        self.context = ssl.create_default_context()

    def connect(self) -> None:
        raw = self._open()
        # The certificate is checked against the endpoint's host name, not the address.
        self.sock = self.context.wrap_socket(raw, server_hostname=self.host)


def _target(url: str) -> str:
    parts = urlsplit(url)
    path = parts.path or "/"
    return f"{path}?{parts.query}" if parts.query else path


def _headers(channel: Sequence[tuple[str, str]], length: int) -> list[tuple[str, str]]:
    headers = [
        ("Content-Type", CONTENT_TYPE),
        ("Content-Length", str(length)),
        ("User-Agent", USER_AGENT),
        ("Accept", CONTENT_TYPE),
    ]
    headers += [(name, value) for name, value in channel if name.lower() not in _OWN_HEADERS]
    return headers


def _post_to(
    url: str,
    scheme: str,
    host: str,
    port: int,
    address: str,
    body: bytes,
    headers: list[tuple[str, str]],
    deadline: _Deadline,
) -> int:
    kind = _PinnedHTTPSConnection if scheme == "https" else _PinnedHTTPConnection
    connection = kind(host, port, address, deadline)
    try:
        connection.putrequest("POST", _target(url), skip_host=True, skip_accept_encoding=True)
        default_port = 443 if scheme == "https" else 80
        shown_host = f"[{host}]" if ":" in host else host
        connection.putheader("Host", shown_host if port == default_port else f"{shown_host}:{port}")
        for name, value in headers:
            connection.putheader(name, value)
        connection.endheaders(body)
        if connection.sock is not None:
            connection.sock.settimeout(deadline.left())
        response = connection.getresponse()
        # The answer's body is not needed: a bounded read lets the connection end cleanly.
        if connection.sock is not None:
            connection.sock.settimeout(deadline.left())
        response.read(RESPONSE_LIMIT)
        return response.status
    finally:
        connection.close()


def post_notification(
    url: str,
    body: bytes,
    channel_headers: Sequence[tuple[str, str]],
    *,
    timeout: float,
    allowed: Sequence[Network],
    resolve: Resolver = system_resolver,
) -> Answer:
    """POST ``body`` to ``url``: the endpoint checked now, the connection pinned to an
    address the check accepted, tried in the order the host resolved to."""
    try:
        destination = check(url, allowed, resolve)
    except EndpointRefused as refusal:
        return Answer(
            status=None, error=f"the endpoint is refused: {refusal}", address=None, refused=True
        )
    deadline = _Deadline(timeout)
    headers = _headers(channel_headers, len(body))
    failed = "no address to connect to"
    for address in destination.addresses:
        try:
            status = _post_to(
                url,
                destination.scheme,
                destination.host,
                destination.port,
                address,
                body,
                headers,
                deadline,
            )
        except TimeoutError:
            return Answer(status=None, error="the receiver did not answer in time", address=address)
        except ssl.SSLError as failure:
            return Answer(status=None, error=f"TLS failed: {failure.reason}", address=address)
        except ConnectionRefusedError:
            failed = "the receiver refused the connection"
            continue
        except (OSError, http.client.HTTPException) as failure:
            failed = f"the exchange with the receiver failed ({type(failure).__name__})"
            continue
        if 300 <= status < 400:
            return Answer(
                status=status,
                error=f"the receiver answered {status}, a redirect, which is not followed",
                address=address,
            )
        if not 200 <= status < 300:
            return Answer(status=status, error=f"the receiver answered {status}", address=address)
        return Answer(status=status, error=None, address=address)
    return Answer(status=None, error=failed, address=destination.addresses[-1])
