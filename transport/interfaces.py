"""Local interface addresses, to turn a wildcard listen address into dialable ones."""

from __future__ import annotations

import fcntl
import ipaddress
import socket
import struct

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


def expand_wildcard(host: str) -> list[str]:
    if host == "::":
        return ipv6_addresses()
    if host == "0.0.0.0":
        return ipv4_addresses()
    return [host]
