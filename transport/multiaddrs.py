"""Multiaddrs for our QUIC transport: ``/ip4|ip6|dns|dns4|dns6/…/udp/PORT/quic-v1[/p2p/ID]``.

Parsing and binary encoding come from the maintained ``multiaddr`` package;
this module only checks that an address is one we can dial or listen on and
turns it into socket terms.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import multiaddr
import trio
from multiaddr.exceptions import Error as MultiaddrLibraryError

from .identity import IdentityError, PeerId

# Longest textual multiaddr we accept from a user or a peer.
MAX_MULTIADDR_LENGTH = 1024


class MultiaddrError(ValueError):
    """An address is malformed or not one our transport can use."""


@dataclass(frozen=True)
class QuicAddress:
    host: str  # IP literal or DNS name
    port: int
    kind: str  # "ip4", "ip6", "dns", "dns4", "dns6"
    peer_id: PeerId | None

    @property
    def is_dns(self) -> bool:
        return self.kind.startswith("dns")

    def family(self) -> int | None:
        return {"ip4": socket.AF_INET, "ip6": socket.AF_INET6, "dns4": socket.AF_INET, "dns6": socket.AF_INET6}.get(
            self.kind
        )


def parse_multiaddr(text: str | bytes) -> multiaddr.Multiaddr:
    if isinstance(text, str) and len(text) > MAX_MULTIADDR_LENGTH:
        raise MultiaddrError(f"multiaddr longer than {MAX_MULTIADDR_LENGTH} characters")
    if isinstance(text, (bytes, bytearray)) and len(text) > MAX_MULTIADDR_LENGTH:
        raise MultiaddrError(f"multiaddr longer than {MAX_MULTIADDR_LENGTH} bytes")
    try:
        return multiaddr.Multiaddr(bytes(text) if isinstance(text, (bytes, bytearray)) else text)
    except (MultiaddrLibraryError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise MultiaddrError(f"invalid multiaddr {text!r}: {exc}") from None


def parse_quic_address(text: str | bytes | multiaddr.Multiaddr) -> QuicAddress:
    """Validate a QUIC multiaddr; raises :class:`MultiaddrError` with the reason."""
    address = text if isinstance(text, multiaddr.Multiaddr) else parse_multiaddr(text)
    parts = [(protocol.name, address.value_for_protocol(protocol.code)) for protocol in address.protocols()]
    names = [name for name, _ in parts]
    if len(parts) not in (3, 4) or names[1:3] != ["udp", "quic-v1"] or (len(parts) == 4 and names[3] != "p2p"):
        raise MultiaddrError(f"{address} is not a QUIC address (expected /ip4|ip6|dns/HOST/udp/PORT/quic-v1[/p2p/ID])")
    kind, host = parts[0]
    if kind not in ("ip4", "ip6", "dns", "dns4", "dns6"):
        raise MultiaddrError(f"{address}: unsupported network protocol /{kind}")
    port = int(parts[1][1])
    if not 0 <= port <= 65535:
        raise MultiaddrError(f"{address}: port out of range")
    peer_id = None
    if len(parts) == 4:
        try:
            peer_id = PeerId.from_base58(parts[3][1])
        except IdentityError as exc:
            raise MultiaddrError(f"{address}: bad /p2p peer ID: {exc}") from None
    return QuicAddress(host=host, port=port, kind=kind, peer_id=peer_id)


def format_quic_address(host: str, port: int, peer_id: PeerId | None = None) -> str:
    version = ipaddress.ip_address(host.split("%")[0]).version
    text = f"/ip{version}/{host}/udp/{port}/quic-v1"
    if peer_id is not None:
        text += f"/p2p/{peer_id}"
    return text


def sockaddr_to_multiaddr(addr: tuple, peer_id: PeerId | None = None) -> str:
    return format_quic_address(addr[0], addr[1], peer_id)


async def resolve(address: QuicAddress) -> list[tuple[int, tuple]]:
    """Socket addresses for ``address``: [(family, sockaddr)], IPv6 first.

    IPv6 socket addresses are the 4-tuples getaddrinfo returns, since that is
    the form recvfrom reports and aioquic compares addresses exactly.
    """
    family = address.family() or socket.AF_UNSPEC
    try:
        infos = await trio.socket.getaddrinfo(address.host, address.port, family, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise MultiaddrError(f"cannot resolve {address.host}: {exc}") from None
    results = []
    for info_family, _, _, _, sockaddr in infos:
        if info_family in (socket.AF_INET, socket.AF_INET6) and (info_family, sockaddr) not in results:
            results.append((info_family, sockaddr))
    results.sort(key=lambda item: item[0] != socket.AF_INET6)
    if not results:
        raise MultiaddrError(f"{address.host} has no usable address")
    return results
