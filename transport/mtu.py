"""Datagram size discovery after the handshake (DPLPMTUD, RFC 8899).

The sizes are tried largest first; only a probe's acknowledgement raises a
connection's datagram size (the probe itself is sent by the connection
driver through ``transport/quic_hooks.py``). Once raised, a
:class:`BlackHoleDetector` watches the large datagrams: if they stop being
acknowledged (a route change to a smaller MTU, a middlebox dropping them,
RFC 8899 §4.3), the size falls back to QUIC's 1,200 bytes and is probed
again ``REPROBE_AFTER_BLACK_HOLE`` later. After a path change (migration)
the size falls back at once and is probed again for the new path.
"""

from __future__ import annotations

import logging
import socket

import trio

from typing import TYPE_CHECKING

from . import metrics
from .endpoint import MAX_UDP_PAYLOAD, route_mtu

if TYPE_CHECKING:
    from .connection import QuicConnectionDriver

log = logging.getLogger("hypermesh.transport")

# IP and UDP headers (IPv4 20 or IPv6 40, UDP 8) subtracted from a route MTU.
IP_UDP_OVERHEAD = {socket.AF_INET: 28, socket.AF_INET6: 48}
# Datagram sizes we try after the handshake, largest first (RFC 8899 search):
# loopback and jumbo-frame paths take the large ones; 1,452 fits Ethernet
# with IPv6; 1,200 (QUIC's minimum) is where we start and stay otherwise.
PROBE_SIZES = (16384, 8952, 1452)
PROBE_TIMEOUT = 1.0
PROBE_DELAY = 0.05
# QUIC's smallest datagram size, which every path must carry (RFC 9000 §14).
BASE_DATAGRAM_SIZE = 1200
# Loss events (a batch declared lost, or a probe timeout) in a row that hit
# datagrams above the base size, with none of those acknowledged in between:
# a black hole. Counting events, not packets: one congestion loss or one
# late ACK can take many packets at once, and a path that still carries
# large datagrams acknowledges some between loss events, resetting the count.
BLACK_HOLE_LOSS_EVENTS = 3
# After a black hole, probe the larger sizes again this much later.
REPROBE_AFTER_BLACK_HOLE = 30.0


class BlackHoleDetector:
    """Sans-IO: fed acknowledged packet sizes and loss events, tells when
    datagrams above the base size have stopped getting through."""

    def __init__(self, base_size: int = BASE_DATAGRAM_SIZE, events: int = BLACK_HOLE_LOSS_EVENTS) -> None:
        self._base_size = base_size
        self._events = events
        self._large_loss_events = 0

    def on_acked(self, size: int) -> None:
        if size > self._base_size:
            self._large_loss_events = 0

    def on_loss_event(self, sizes) -> bool:
        """Packets of ``sizes`` were lost together; True once it is a black hole."""
        if any(size > self._base_size for size in sizes):
            self._large_loss_events += 1
        return self._large_loss_events >= self._events


class ProbeOutcome:
    """What became of one datagram-size probe."""

    def __init__(self) -> None:
        self.settled = trio.Event()
        self.acknowledged = False

    def set(self, acknowledged: bool) -> None:
        if not self.settled.is_set():
            self.acknowledged = acknowledged
            self.settled.set()


async def probe_datagram_size(driver: "QuicConnectionDriver", delay: float = PROBE_DELAY) -> None:
    """Raise the datagram size to the largest the path carries.

    Waits a moment first: a short-lived connection (one ping, one lookup)
    never needs large datagrams, and the handshake's own work finishes
    sooner without probes competing with it.
    """
    try:
        await trio.sleep(delay)
        await _run_probes(driver)
    finally:
        driver.probing_done.set()


async def _run_probes(driver: "QuicConnectionDriver") -> None:
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
