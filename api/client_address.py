"""The address a request comes from, as the audit trail and the rate limits see it.

The peer's address, unless the peer is one of the trusted proxies (``IPT_TRUSTED_PROXIES``):
then the address it forwarded (``X-Forwarded-For``, else ``Forwarded``), followed back
through trusted proxies only. A forwarding header from any other peer is ignored, so a
caller cannot hide its address, or spread its token requests over invented ones.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from flask import current_app, request


def source_address() -> str | None:
    """The caller's address: the peer's, or what trusted proxies forwarded."""
    peer = request.remote_addr
    settings = current_app.extensions.get("ipt_settings")
    trusted: tuple[Any, ...] = settings.trusted_proxies if settings is not None else ()
    if not trusted or not _is_trusted(peer, trusted):
        return peer
    hops = _forwarded_hops()
    address = peer
    # From the nearest hop back: the first address that is not a trusted proxy is the
    # caller's (anything before it was written by the caller and proves nothing).
    while hops and _is_trusted(address, trusted):
        address = hops.pop()
    return address


def _forwarded_hops() -> list[str]:
    """The addresses proxies forwarded, the client's first."""
    forwarded_for = request.headers.getlist("X-Forwarded-For")
    if forwarded_for:
        return [hop.strip() for line in forwarded_for for hop in line.split(",") if hop.strip()]
    hops = []
    for line in request.headers.getlist("Forwarded"):
        for element in line.split(","):
            for pair in element.split(";"):
                name, _, value = pair.strip().partition("=")
                if name.lower() == "for" and value:
                    hops.append(_forwarded_node(value.strip().strip('"')))
    return hops


def _forwarded_node(node: str) -> str:
    """``[2001:db8::1]:4711`` -> ``2001:db8::1``; ``192.0.2.1:80`` -> ``192.0.2.1``."""
    if node.startswith("["):
        return node[1:].partition("]")[0]
    return node.partition(":")[0] if node.count(":") == 1 else node


def _is_trusted(address: str | None, trusted: tuple[Any, ...]) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)
