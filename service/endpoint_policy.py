"""Where the service may send a request a client asked for (a subscription's endpoint).

A client-chosen URL must not become a way into the network the service runs in. An
endpoint is refused unless it is an absolute ``https`` URL without credentials whose host
resolves only to public addresses. An operator's allow-list (networks, for a receiver
inside the cluster, or the tests' local receiver) permits the addresses it names, over
``http`` too.

The check is made twice: when the endpoint is written (so that the client hears at once
why it is refused), and when each request is sent, against the addresses the host
resolves to then, which the request is pinned to (so that a name re-pointed at a private
address after the first check is refused as well).
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

# Public addresses only: what Python's ``is_global`` says, minus multicast (which it calls
# global) and the IPv4 shared address space of carrier-grade NAT (which it does not).
_SHARED = ipaddress.ip_network("100.64.0.0/10")


class EndpointRefused(ValueError):
    """The endpoint may not be used; the message says why, without echoing secrets."""


@dataclass(frozen=True)
class Destination:
    """An endpoint that passed the check: its parts and the addresses to connect to."""

    scheme: str
    host: str
    port: int
    addresses: tuple[str, ...]


def system_resolver(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to now (A and AAAA records), deduplicated in order."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise EndpointRefused(f"the endpoint's host {host!r} does not resolve") from error
    found: list[str] = []
    for info in infos:
        address = str(info[4][0]).split("%", 1)[0]
        if address not in found:
            found.append(address)
    return found


def parse_networks(text: str) -> tuple[Network, ...]:
    """An allow-list written as comma- or space-separated addresses and networks."""
    networks: list[Network] = []
    for part in text.replace(",", " ").split():
        networks.append(ipaddress.ip_network(part, strict=False))
    return tuple(networks)


def _allowed(address: Address, allowed: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in allowed)


def _public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return _public(address.ipv4_mapped)
    if address.is_multicast or (isinstance(address, ipaddress.IPv4Address) and address in _SHARED):
        return False
    return address.is_global


def refused_address(address: str, allowed: Sequence[Network]) -> str | None:
    """Why a connection to ``address`` is refused, or None when it may be made."""
    parsed = ipaddress.ip_address(address)
    if _allowed(parsed, allowed) or _public(parsed):
        return None
    return (
        f"{address}, a loopback, private, link-local or otherwise non-public address "
        "that the operator's allow-list does not permit"
    )


def check(
    url: str,
    allowed: Sequence[Network],
    resolve: Resolver = system_resolver,
) -> Destination:
    """The destination ``url`` names, or :class:`EndpointRefused` saying why it may not be used."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise EndpointRefused("the endpoint is not a valid URL") from error
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http") or not parts.hostname:
        raise EndpointRefused("the endpoint must be an absolute https URL")
    if parts.username is not None or parts.password is not None:
        raise EndpointRefused(
            "the endpoint must not carry credentials; send them as a channel header instead"
        )
    if parts.fragment:
        raise EndpointRefused("the endpoint must not have a fragment")
    host = parts.hostname
    port = port or (443 if scheme == "https" else 80)
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        addresses = resolve(host, port)
    if not addresses:
        raise EndpointRefused(f"the endpoint's host {host!r} does not resolve")
    for address in addresses:
        reason = refused_address(address, allowed)
        if reason is not None:
            raise EndpointRefused(f"the endpoint's host {host!r} resolves to {reason}")
    if scheme == "http" and not all(
        _allowed(ipaddress.ip_address(address), allowed) for address in addresses
    ):
        raise EndpointRefused(
            "the endpoint must be an https URL (http only to destinations the operator allows)"
        )
    return Destination(scheme=scheme, host=host, port=port, addresses=tuple(addresses))
