"""Local interface addresses, to turn a wildcard listen address into dialable ones."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct
import time

SIOCGIFADDR = 0x8915


def ipv6_addresses() -> list[str]:
    """Global and loopback IPv6 addresses (link-local ones need a zone: skipped)."""
    found = []
    try:
        with open("/proc/net/if_inet6") as table:
            for line in table:
                fields = line.split()
                if len(fields) < 6:
                    continue
                address = ipaddress.IPv6Address(bytes.fromhex(fields[0]))
                if not address.is_link_local:
                    found.append(str(address))
    except OSError:
        found = ["::1"]
    return sorted(found, key=lambda text: text != "::1")


def ipv4_addresses() -> list[str]:
    found = []
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(probe.fileno(), SIOCGIFADDR, struct.pack("256s", name[:15].encode()))
            except OSError:
                continue  # interface without an IPv4 address
            found.append(socket.inet_ntoa(packed[20:24]))
    finally:
        probe.close()
    return sorted(set(found) or {"127.0.0.1"}, key=lambda text: text != "127.0.0.1")


# Interface addresses change rarely; identify asks for them on every request.
INTERFACE_CACHE_SECONDS = 5.0
_cache: dict[str, tuple[float, list[str]]] = {}


def expand_wildcard(host: str) -> list[str]:
    """The addresses a wildcard bind (``::``, ``0.0.0.0``) is reachable at."""
    if host not in ("::", "0.0.0.0"):
        return [host]
    now = time.monotonic()
    cached = _cache.get(host)
    if cached is None or cached[0] < now:
        cached = _cache[host] = (now + INTERFACE_CACHE_SECONDS, ipv6_addresses() if host == "::" else ipv4_addresses())
    return list(cached[1])
