"""A quiet connection to a peer with a 2 s idle timeout stays open (issue 10, defect 3).

    .venv/bin/python bench/hostile/short_idle_timeout.py [--maddr MADDR] [--quick]

A bare QUIC client (no libp2p host: it never sends anything of its own
accord, as a quinn or quic-go peer with keepalives off) dials the node
advertising a 2 s idle timeout, opens a ping stream and pings once, then
stays silent for 60 s (10 s with --quick), only letting its QUIC stack
acknowledge what arrives; then it pings again on the same stream. Only the
node's keepalives can hold the connection open meanwhile: QUIC applies the
smaller of the two idle timeouts. Passes if the connection is still open and
the second ping is answered. Before the fix the node pinged at half of its
own 30 s and the peer closed the connection after 2 s.
"""

from __future__ import annotations

import math
import os
import socket
import ssl
import sys
import time

import trio
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration

from common import parse_args, report, target_node

from hypermesh.transport import ping
from hypermesh.transport.identity import Identity
from hypermesh.transport.multiaddrs import parse_quic_address
from hypermesh.transport.multistream import Negotiator
from hypermesh.transport.quic_hooks import Libp2pQuicConnection
from hypermesh.transport.tls import ALPN, make_certificate

PEER_IDLE_TIMEOUT = 2.0
STEP = 10.0


class QuietClient:
    """One QUIC client connection over a (non-blocking) UDP socket, driven by hand."""

    def __init__(self, addr: str, idle_timeout: float):
        self.target = parse_quic_address(addr)
        certificate, key = make_certificate(Identity.generate())
        self.quic = Libp2pQuicConnection(
            configuration=QuicConfiguration(
                alpn_protocols=[ALPN], certificate=certificate, private_key=key, verify_mode=ssl.CERT_NONE,
                is_client=True, idle_timeout=idle_timeout,
            ),
            expected_peer_id=self.target.peer_id,
        )
        self.socket = socket.socket(socket.AF_INET6 if ":" in self.target.host else socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.setblocking(False)
        self.received = bytearray()
        self.datagrams_in = 0
        self.handshake_done = trio.Event()
        self.terminated: str | None = None

    async def step(self, until: float) -> None:
        """Send what is due, then wait for datagrams or a timer, at most until ``until``."""
        for data, addr in self.quic.datagrams_to_send(trio.current_time()):
            self.socket.sendto(data, addr)
        timer = self.quic.get_timer()
        with trio.move_on_at(min(timer if timer is not None else math.inf, until)):
            await trio.lowlevel.wait_readable(self.socket)
        # What has arrived first, then timers: on a busy machine this process
        # may wake late, and must not time out a connection whose packets
        # are already waiting in the socket.
        while True:
            try:
                data, addr = self.socket.recvfrom(65536)
            except BlockingIOError:
                break
            self.datagrams_in += 1
            self.quic.receive_datagram(data, addr, trio.current_time())
        timer = self.quic.get_timer()
        if timer is not None and trio.current_time() >= timer:
            self.quic.handle_timer(trio.current_time())
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, events.HandshakeCompleted):
                self.handshake_done.set()
            elif isinstance(event, events.StreamDataReceived):
                self.received += event.data
            elif isinstance(event, events.ConnectionTerminated):
                self.terminated = event.reason_phrase or f"error 0x{event.error_code:x}"

    async def run_until(self, done, deadline: float) -> bool:
        """Drive the connection until ``done()`` or ``deadline``; False if it ended first."""
        while not done() and trio.current_time() < deadline and self.terminated is None:
            await self.step(deadline)
        return self.terminated is None

    async def ping(self, stream_id: int) -> bool:
        """Send a ping payload on ``stream_id`` and wait for its echo."""
        payload = os.urandom(ping.PAYLOAD_SIZE)
        self.quic.send_stream_data(stream_id, payload)
        await self.run_until(lambda: payload in self.received, trio.current_time() + STEP)
        found = payload in self.received
        self.received.clear()
        return found


async def quiet_connection(addr: str, quiet_seconds: float) -> dict:
    client = QuietClient(addr, PEER_IDLE_TIMEOUT)
    client.socket.connect((client.target.host, client.target.port))
    client.quic.connect(client.socket.getpeername(), now=trio.current_time())
    result: dict = {"peer_idle_timeout_s": PEER_IDLE_TIMEOUT, "quiet_seconds": quiet_seconds}
    await client.run_until(client.handshake_done.is_set, trio.current_time() + STEP)
    if not client.handshake_done.is_set():
        return {**result, "error": f"handshake: {client.terminated or 'no answer'}", "datagrams_in": client.datagrams_in}
    stream_id = client.quic.get_next_available_stream_id()
    client.quic.send_stream_data(stream_id, Negotiator.dialer([ping.PROTOCOL]).initial_bytes())
    result["first_ping"] = await client.ping(stream_id)
    before = client.datagrams_in
    started = time.monotonic()
    # Silence: only acknowledgements of what the node sends leave this client.
    await client.run_until(lambda: False, trio.current_time() + quiet_seconds)
    result["open_after_s"] = round(time.monotonic() - started, 1)
    result["node_datagrams_while_quiet"] = client.datagrams_in - before
    result["still_open"] = client.terminated is None
    if client.terminated is not None:
        result["closed_because"] = client.terminated
        return result
    result["ping_after_silence"] = await client.ping(stream_id)
    return result


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    with target_node(args) as (addr, _pid):
        result = trio.run(quiet_connection, addr, 10.0 if args.quick else 60.0)
    passed = result.get("first_ping") and result.get("still_open") and result.get("ping_after_silence")
    return report(result, bool(passed))


if __name__ == "__main__":
    sys.exit(main())
