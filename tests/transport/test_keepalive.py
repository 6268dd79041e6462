"""Keepalive against a peer whose idle timeout is shorter than ours, over
real QUIC on [::1]. The peer is a bare QUIC endpoint that never sends
anything of its own accord (as a quinn or quic-go peer with keepalives off):
only our pings can keep the connection open."""

import math
import socket
import ssl

import trio
from aioquic.buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import pull_quic_header

from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity
from hypermesh.transport.multiaddrs import format_quic_address
from hypermesh.transport.quic_hooks import Libp2pQuicConnection
from hypermesh.transport.tls import ALPN, make_certificate

PEER_IDLE_TIMEOUT = 2.0


class QuietPeer:
    """One server connection with a short idle timeout, driven over a UDP socket."""

    def __init__(self, identity: Identity, idle_timeout: float):
        self.identity = identity
        self.idle_timeout = idle_timeout
        self.socket = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.socket.setblocking(False)
        self.quic: Libp2pQuicConnection | None = None
        self.terminated = trio.Event()

    async def bind(self) -> str:
        self.socket.bind(("::1", 0))
        return format_quic_address("::1", self.socket.getsockname()[1], self.identity.peer_id)

    async def run(self) -> None:
        while not self.terminated.is_set():
            timer = self.quic.get_timer() if self.quic is not None else None
            with trio.move_on_at(timer if timer is not None else math.inf):
                await trio.lowlevel.wait_readable(self.socket)
            # Datagrams that arrived first, then timers: on a loaded machine
            # this task may wake late, and must not let a connection whose
            # packets already wait in the socket time out.
            while True:
                try:
                    data, addr = self.socket.recvfrom(65536)
                except BlockingIOError:
                    break
                self._received(data, addr)
            timer = self.quic.get_timer() if self.quic is not None else None
            now = trio.current_time()
            if timer is not None and now >= timer:
                self.quic.handle_timer(now)
            self._flush()

    def _received(self, data: bytes, addr) -> None:
        if self.quic is None:
            header = pull_quic_header(Buffer(data=data), host_cid_length=8)
            certificate, key = make_certificate(self.identity)
            self.quic = Libp2pQuicConnection(
                configuration=QuicConfiguration(
                    alpn_protocols=[ALPN],
                    certificate=certificate,
                    private_key=key,
                    verify_mode=ssl.CERT_NONE,
                    is_client=False,
                    idle_timeout=self.idle_timeout,
                ),
                original_destination_connection_id=header.destination_cid,
            )
        self.quic.receive_datagram(data, addr, trio.current_time())

    def _flush(self) -> None:
        if self.quic is None:
            return
        for data, addr in self.quic.datagrams_to_send(trio.current_time()):
            self.socket.sendto(data, addr)
        while (event := self.quic.next_event()) is not None:
            if isinstance(event, events.ConnectionTerminated):
                self.terminated.set()


async def test_quiet_connection_to_a_peer_with_a_2_s_idle_timeout_stays_open():
    peer = QuietPeer(Identity.generate(), PEER_IDLE_TIMEOUT)
    addr = await peer.bind()
    async with open_host(Identity.generate(), ["/ip6/::1/udp/0/quic-v1"]) as client, trio.open_nursery() as nursery:
        nursery.start_soon(peer.run)
        with trio.fail_after(10):
            driver = await client.connect(addr)
        assert driver.quic.effective_idle_timeout == PEER_IDLE_TIMEOUT
        stream = driver.open_stream()
        await stream.send_all(b"an open stream, then silence")
        # Three of the peer's idle timeouts: only our keepalives are sent.
        with trio.move_on_after(3 * PEER_IDLE_TIMEOUT):
            await driver.closed_event.wait()
        assert not driver.closed, driver.close_reason
        assert not peer.terminated.is_set()
        nursery.cancel_scope.cancel()
