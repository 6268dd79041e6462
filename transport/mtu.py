"""Datagram size discovery after the handshake (DPLPMTUD, RFC 8899).

The sizes are tried largest first; only a probe's acknowledgement raises a
connection's datagram size (the probe itself is sent by the connection
driver through ``transport/quic_hooks.py``).
"""

from __future__ import annotations

import logging
import socket

import trio

from . import metrics
from .connection import QuicConnectionDriver
from .endpoint import MAX_UDP_PAYLOAD, route_mtu

log = logging.getLogger("hypermesh.transport")

# IP and UDP headers (IPv4 20 or IPv6 40, UDP 8) subtracted from a route MTU.
IP_UDP_OVERHEAD = {socket.AF_INET: 28, socket.AF_INET6: 48}
# Datagram sizes we try after the handshake, largest first (RFC 8899 search):
# loopback and jumbo-frame paths take the large ones; 1,452 fits Ethernet
# with IPv6; 1,200 (QUIC's minimum) is where we start and stay otherwise.
PROBE_SIZES = (16384, 8952, 1452)
PROBE_TIMEOUT = 1.0
PROBE_DELAY = 0.05


class ProbeOutcome:
    """What became of one datagram-size probe."""

    def __init__(self) -> None:
        self.settled = trio.Event()
        self.acknowledged = False

    def set(self, acknowledged: bool) -> None:
        if not self.settled.is_set():
            self.acknowledged = acknowledged
            self.settled.set()


async def probe_datagram_size(driver: QuicConnectionDriver) -> None:
    """Raise the datagram size to the largest the path carries.

    Waits a moment first: a short-lived connection (one ping, one lookup)
    never needs large datagrams, and the handshake's own work finishes
    sooner without probes competing with it.
    """
    try:
        await trio.sleep(PROBE_DELAY)
        await _run_probes(driver)
    finally:
        driver.probing_done.set()


async def _run_probes(driver: QuicConnectionDriver) -> None:
    family = driver.endpoint.family
    mtu = route_mtu(family, driver.remote_addr)
    if mtu is None:
        return
    ceiling = min(mtu - IP_UDP_OVERHEAD[family], MAX_UDP_PAYLOAD)
    remote_limit = driver.quic.remote_max_udp_payload_size
    if remote_limit:
        ceiling = min(ceiling, remote_limit)
    for size in PROBE_SIZES:
        if size > ceiling or size <= driver.quic.max_datagram_size or driver.closed:
            continue
        outcome = ProbeOutcome()
        driver.send_probe(size, outcome.set)
        with trio.move_on_after(PROBE_TIMEOUT):
            await outcome.settled.wait()
        if outcome.acknowledged:
            metrics.DATAGRAM_SIZE.set(size)
            log.debug("datagram size to %s raised to %d", driver.remote_multiaddr, size)
            return
