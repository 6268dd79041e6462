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


def multiaddr_text(raw: bytes | str) -> str:
    """Canonical text of a multiaddr given as bytes or text."""
    if isinstance(raw, (bytes, bytearray)):
        fast = quic_address_text(bytes(raw))
        if fast is not None:
            return fast
    return str(parse_multiaddr(raw))


def parse_multiaddr(text: str | bytes) -> multiaddr.Multiaddr:
    if isinstance(text, str) and len(text) > MAX_MULTIADDR_LENGTH:
        raise MultiaddrError(f"multiaddr longer than {MAX_MULTIADDR_LENGTH} characters")
    if isinstance(text, (bytes, bytearray)) and len(text) > MAX_MULTIADDR_LENGTH:
        raise MultiaddrError(f"multiaddr longer than {MAX_MULTIADDR_LENGTH} bytes")
    try:
        return multiaddr.Multiaddr(bytes(text) if isinstance(text, (bytes, bytearray)) else text)
    except (MultiaddrLibraryError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise MultiaddrError(f"invalid multiaddr {text!r}: {exc}") from None


_FAMILY_OF_KIND = {"ip4": socket.AF_INET, "ip6": socket.AF_INET6}
# Binary form of the only addresses we listen on: ip4|ip6, udp, quic-v1.
_IP_CODES = {"ip4": b"\x04", "ip6": b"\x29"}
_CODE_IP_KIND = {0x04: ("ip4", 4), 0x29: ("ip6", 16)}
_UDP_CODE = b"\x91\x02"
_QUIC_V1_CODE = b"\xcd\x03"  # 0x01cd; 0x01cc is the older draft-29 "/quic"


def _fast_parse_text(text: str) -> QuicAddress | None:
    """The common ``/ip4|ip6/IP/udp/PORT/quic-v1[/p2p/ID]`` without the generic
    (and slow) multiaddr parser; None means "use the generic one"."""
    parts = text.split("/")
    if len(parts) not in (6, 8) or parts[0] or parts[3] != "udp" or parts[5] != "quic-v1":
        return None
    kind = parts[1]
    family = _FAMILY_OF_KIND.get(kind)
    if family is None or not parts[4].isdigit() or (len(parts) == 8 and parts[6] != "p2p"):
        return None
    try:
        socket.inet_pton(family, parts[2])
    except (OSError, ValueError):
        return None
    port = int(parts[4])
    if port > 65535:
        return None
    peer_id = None
    if len(parts) == 8:
        try:
            peer_id = PeerId.from_base58(parts[7])
        except IdentityError:
            return None
    return QuicAddress(host=parts[2], port=port, kind=kind, peer_id=peer_id)


def quic_address_bytes(host: str, port: int) -> bytes:
    """Binary multiaddr of ``/ip4|ip6/HOST/udp/PORT/quic-v1``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    kind = "ip6" if family == socket.AF_INET6 else "ip4"
    return _IP_CODES[kind] + socket.inet_pton(family, host) + _UDP_CODE + port.to_bytes(2, "big") + _QUIC_V1_CODE


def quic_address_text(raw: bytes) -> str | None:
    """Text of a binary ``/ip4|ip6/…/udp/…/quic-v1`` multiaddr, or None for
    any other address (to be decoded by the generic parser)."""
    if not raw:
        return None
    known = _CODE_IP_KIND.get(raw[0])
    if known is None:
        return None
    kind, size = known
    if len(raw) != 1 + size + 6 or raw[1 + size : 3 + size] != _UDP_CODE or raw[5 + size :] != _QUIC_V1_CODE:
        return None
    family = _FAMILY_OF_KIND[kind]
    port = int.from_bytes(raw[3 + size : 5 + size], "big")
    return f"/{kind}/{socket.inet_ntop(family, raw[1 : 1 + size])}/udp/{port}/quic-v1"


def parse_quic_address(text: str | bytes | multiaddr.Multiaddr) -> QuicAddress:
    """Validate a QUIC multiaddr; raises :class:`MultiaddrError` with the reason."""
    if isinstance(text, str) and len(text) <= MAX_MULTIADDR_LENGTH:
        fast = _fast_parse_text(text)
        if fast is not None:
            return fast
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
