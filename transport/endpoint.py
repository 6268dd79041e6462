"""One UDP socket shared by many QUIC connections.

The endpoint reads datagrams, routes each to its connection by destination
connection ID (so a client that changes address keeps its connection), hands
unknown Initial packets to the host to accept, and answers unsupported
versions with Version Negotiation. Anything else is dropped and counted.

Sockets are plain non-blocking stdlib sockets driven with trio's
``wait_readable``: reading until the socket is empty before sleeping, and
sending synchronously, keeps the per-datagram cost to one system call.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import struct
import sys
import time
from typing import TYPE_CHECKING, Callable

import trio
from aioquic.quic.packet import QuicProtocolVersion, encode_quic_version_negotiation

from . import metrics

if TYPE_CHECKING:
    from .connection import QuicConnectionDriver

log = logging.getLogger("hypermesh.transport")

# Our connection IDs are 8 bytes (aioquic's default), which short-header
# packets carry right after the first byte.
HOST_CID_LENGTH = 8
# RFC 9000 §14.1: a server must not start a connection for an Initial in a
# datagram smaller than this (amplification defence).
MIN_INITIAL_DATAGRAM = 1200
# Receive buffer: the largest UDP payload, since peers (quinn, ourselves on
# loopback) may send datagrams well above 1,500 bytes.
MAX_UDP_PAYLOAD = 65527
# Datagrams handled per wake-up before yielding to other tasks and sending
# what they call for (ACKs, window updates). Counted in datagrams, not in
# receive calls: with GRO one call may return 40+ of them, and a batch of 64
# calls held a bulk sender's ACKs back for thousands of datagrams.
MAX_BATCH = 64
# Kernel socket buffers (the kernel doubles what we ask for): large enough to
# absorb a burst at loopback speed (bulk transfers ran no faster at 8 MB), and
# small enough that an overloaded node drops datagrams within ~0.2 s of
# queueing, which QUIC's loss recovery turns into senders slowing down. At
# 8 MB, datagrams queued for tens of seconds and every request timed out.
SOCKET_BUFFER_BYTES = 1 << 20
SUPPORTED_VERSIONS = [QuicProtocolVersion.VERSION_1]
# After traffic, poll the socket this long before sleeping: waking a sleeping
# process costs far more than a ping-pong round trip on loopback. Never
# spins while idle. The default for HostConfig.busy_poll_seconds.
SPIN_SECONDS = float(os.environ.get("HYPERMESH_SPIN_US", "200")) / 1e6
# After sending a handshake flight, poll this long for the answer (when
# busy polling is on at all).
HANDSHAKE_SPIN_SECONDS = 0.003

# Scheduler rounds we give woken readers to answer before transmitting for them.
READER_ROUNDS = 2
# An Initial that waited in the socket queue longer than this is dropped
# instead of opening a connection. Under overload the kernel queue holds
# seconds of datagrams; by then the client has retransmitted (its newer copy
# is served) or given up, and a handshake for a client that gave up is the
# costliest kind of wasted work: it feeds the overload that delayed it.
STALE_INITIAL_SECONDS = 1.0
# Linux: the kernel stamps each datagram with its arrival time.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
_TIMESPEC = struct.Struct("@qq")
# Linux UDP segmentation offload: one sendmsg carries a run of datagrams of
# one size (the last may be shorter), which the kernel splits (GSO, Linux
# 4.18), and one recvmsg returns a run that arrived together (GRO, 5.0).
# At 1,452-byte datagrams that is one system call for up to 44 of them.
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
_SEGMENT_SIZE = struct.Struct("@H")  # UDP_SEGMENT's value on send
_GRO_SIZE = struct.Struct("@i")  # UDP_GRO's value on receive
# The kernel's limits for one GSO send.
GSO_MAX_SEGMENTS = 64
GSO_MAX_BYTES = 65000
_ANCILLARY_SPACE = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_GRO_SIZE.size)

AcceptCallback = Callable[["QuicEndpoint", bytes, tuple, bytes, int], "QuicConnectionDriver | None"]

_PMTU_OPTIONS = {
    socket.AF_INET: (socket.IPPROTO_IP, getattr(socket, "IP_MTU_DISCOVER", 10), 3),  # IP_PMTUDISC_PROBE
    socket.AF_INET6: (socket.IPPROTO_IPV6, getattr(socket, "IPV6_MTU_DISCOVER", 23), 3),  # IPV6_PMTUDISC_PROBE
}


def make_udp_socket(family: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            # Separate IPv4 and IPv6 sockets avoid ::ffff: mapped addresses.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            try:
                sock.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
            except OSError:
                pass
        if SO_TIMESTAMPNS is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            except OSError:
                pass
        if sys.platform.startswith("linux") and os.environ.get("HYPERMESH_UDP_OFFLOAD", "1") != "0":
            try:
                sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            except OSError:
                pass
        # Set "don't fragment" so an oversized probe is dropped (or refused
        # with EMSGSIZE), never silently fragmented.
        level, name, value = _PMTU_OPTIONS[family]
        try:
            sock.setsockopt(level, name, value)
        except OSError:
            pass
        sock.setblocking(False)
        sock.bind((host, port) if family == socket.AF_INET else (host, port, 0, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def _option_enabled(sock: socket.socket, option: int, level: int = socket.SOL_SOCKET) -> bool:
    try:
        return bool(sock.getsockopt(level, option))
    except OSError:
        return False


def route_mtu(family: int, addr: tuple) -> int | None:
    """The kernel's MTU for the route to ``addr``, or None if unknown.

    Connecting a UDP socket sends nothing; it only resolves the route.
    """
    probe = socket.socket(family, socket.SOCK_DGRAM)
    try:
        probe.connect(addr)
        if family == socket.AF_INET:
            return probe.getsockopt(socket.IPPROTO_IP, getattr(socket, "IP_MTU", 14))
        return probe.getsockopt(socket.IPPROTO_IPV6, getattr(socket, "IPV6_MTU", 24))
    except OSError:
        return None
    finally:
        probe.close()


def destination_cid(data: bytes) -> tuple[bytes, bool] | None:
    """(destination connection ID, is_long_header) or None if unparseable."""
    if len(data) < 1 + HOST_CID_LENGTH:
        return None
    first = data[0]
    if first & 0x80:
        if len(data) < 7:
            return None
        length = data[5]
        if length > 20 or len(data) < 6 + length:
            return None
        return data[6 : 6 + length], True
    return data[1 : 1 + HOST_CID_LENGTH], False


class QuicEndpoint:
    def __init__(
        self, sock: socket.socket, family: int, accept: AcceptCallback | None, *, spin_seconds: float = SPIN_SECONDS
    ):
        self.sock = sock
        self.family = family
        self._accept = accept
        self._connections: dict[bytes, "QuicConnectionDriver"] = {}
        self.closed = False
        host, port = sock.getsockname()[:2]
        self.local_host = host
        self.local_port = port
        self._recv_buffer = bytearray(MAX_UDP_PAYLOAD)
        # False for a dial-only endpoint, which is not advertised.
        self.listening = True
        # Until when to poll the socket instead of sleeping (see SPIN_SECONDS).
        self.spin_until = 0.0
        self.spin_seconds = spin_seconds
        self.handshake_spin_seconds = HANDSHAKE_SPIN_SECONDS if spin_seconds > 0 else 0.0
        self._timestamps = SO_TIMESTAMPNS is not None and _option_enabled(sock, SO_TIMESTAMPNS)
        # GRO: datagrams may arrive several to a recvmsg, split by their size.
        self._gro = _option_enabled(sock, UDP_GRO, SOL_UDP)
        # GSO: on until the kernel refuses it once (then one send per datagram).
        self.gso = self._gro

    # -- routing -------------------------------------------------------------

    def register_cid(self, cid: bytes, driver: "QuicConnectionDriver") -> None:
        self._connections[cid] = driver
        driver.user_data.setdefault("cids", set()).add(cid)

    def unregister_cid(self, cid: bytes) -> None:
        driver = self._connections.pop(cid, None)
        if driver is not None:
            driver.user_data.get("cids", set()).discard(cid)

    def unregister_connection(self, driver: "QuicConnectionDriver") -> None:
        for cid in driver.user_data.get("cids", ()):
            if self._connections.get(cid) is driver:
                del self._connections[cid]
        driver.user_data["cids"] = set()

    @property
    def connection_count(self) -> int:
        return len({id(driver) for driver in self._connections.values()})

    # -- I/O -------------------------------------------------------------------

    def send_datagram(self, data: bytes, addr: tuple) -> bool:
        """Send now; False only if the kernel refuses the size (EMSGSIZE).

        A full socket buffer drops the datagram, as a congested router
        would; QUIC's loss recovery resends and slows down.
        """
        try:
            self.sock.sendto(data, addr)
        except BlockingIOError:
            metrics.DATAGRAMS_DROPPED.labels("send_buffer_full").inc()
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                return False
            metrics.DATAGRAMS_DROPPED.labels("send_error").inc()
            log.debug("sendto %s failed: %s", addr, exc)
        return True

    def send_datagrams(self, datagrams: list[bytes], addr: tuple) -> None:
        """Send ``datagrams`` in order, runs of one size in one system call (GSO)."""
        count = len(datagrams)
        index = 0
        while index < count:
            size = len(datagrams[index])
            end = index + 1
            total = size
            if self.gso:
                while end < count and end - index < GSO_MAX_SEGMENTS:
                    length = len(datagrams[end])
                    if length > size or total + length > GSO_MAX_BYTES:
                        break
                    total += length
                    end += 1
                    if length < size:
                        break  # only the last segment may be shorter
            if end - index == 1 or not self._send_segments(datagrams[index:end], size, addr):
                for data in datagrams[index:end]:
                    self.send_datagram(data, addr)
            index = end

    def _send_segments(self, run: list[bytes], size: int, addr: tuple) -> bool:
        """One GSO send; False if the kernel refused it (then send one by one)."""
        try:
            self.sock.sendmsg([b"".join(run)], [(SOL_UDP, UDP_SEGMENT, _SEGMENT_SIZE.pack(size))], 0, addr)
        except BlockingIOError:
            metrics.DATAGRAMS_DROPPED.labels("send_buffer_full").inc(len(run))
        except OSError as exc:
            if exc.errno != errno.EMSGSIZE:
                # No GSO here (an old kernel, a device without checksum offload).
                log.debug("UDP GSO send to %s failed (%s): sending datagrams one by one", addr, exc)
                self.gso = False
            return False
        return True

    async def run(self) -> None:
        """Receive until closed. Never raises on bad input."""
        sock = self.sock
        buffer = self._recv_buffer
        view = memoryview(buffer)
        dirty: dict[int, "QuicConnectionDriver"] = {}
        clock = trio.current_time
        datagrams_received = metrics.DATAGRAMS_RECEIVED
        timestamps = self._timestamps
        use_recvmsg = timestamps or self._gro
        buffers = [buffer]
        while not self.closed:
            received = 0
            wall_clock = time.time() if timestamps else 0.0
            while received < MAX_BATCH:
                queued = 0.0
                segment = 0
                try:
                    if use_recvmsg:
                        size, ancillary, _, addr = sock.recvmsg_into(buffers, _ANCILLARY_SPACE)
                        for level, kind, value in ancillary:
                            if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET and len(value) >= _TIMESPEC.size:
                                seconds, nanoseconds = _TIMESPEC.unpack_from(value)
                                queued = wall_clock - (seconds + nanoseconds * 1e-9)
                            elif kind == UDP_GRO and level == SOL_UDP and len(value) >= _GRO_SIZE.size:
                                segment = _GRO_SIZE.unpack_from(value)[0]
                    else:
                        size, addr = sock.recvfrom_into(buffer)
                except BlockingIOError:
                    break
                except OSError as exc:
                    # ICMP errors surface here on Linux (e.g. port unreachable).
                    log.debug("recvfrom failed: %s", exc)
                    continue
                now = clock()
                if 0 < segment < size:
                    # Several datagrams coalesced by GRO: each is segment bytes, the last may be less.
                    received += -(-size // segment)
                    for start in range(0, size, segment):
                        driver = self._datagram_received(bytes(view[start : min(start + segment, size)]), addr,
                                                         now, queued)
                        if driver is not None:
                            dirty[id(driver)] = driver
                    continue
                received += 1
                driver = self._datagram_received(bytes(view[:size]), addr, now, queued)
                if driver is not None:
                    dirty[id(driver)] = driver
            if received:
                datagrams_received.inc(received)
                # Let woken stream readers run first: their replies then carry
                # the acknowledgements, one packet instead of two. Trio may run
                # us before them in the next batch, so allow a second round.
                # On a connection with new streams, what their handlers write
                # meanwhile (multistream answer and reply) is left for us to
                # send in one packet; a handshake flight goes first, at once:
                # the peer works on it while a 0-RTT request is answered.
                deferred = [driver for driver in dirty.values() if driver.new_streams]
                for driver in deferred:
                    if driver.needs_transmit and not driver.handshake_complete.is_set():
                        driver.transmit()
                    driver.transmit_deferred = True
                try:
                    for _ in range(READER_ROUNDS):
                        await trio.lowlevel.checkpoint()
                        if not any(
                            driver.needs_transmit and driver.readers_woken and not driver.answered
                            for driver in dirty.values()
                        ):
                            break
                finally:
                    for driver in deferred:
                        driver.transmit_deferred = driver.new_streams = False
                for driver in dirty.values():
                    if driver.needs_transmit:
                        driver.transmit()
                dirty.clear()
                self.spin_until = clock() + self.spin_seconds
            elif clock() < self.spin_until:
                await trio.lowlevel.checkpoint()
            else:
                try:
                    await trio.lowlevel.wait_readable(sock)
                except (trio.ClosedResourceError, OSError):
                    return

    def _datagram_received(
        self, data: bytes, addr: tuple, now: float, queued: float = 0.0
    ) -> "QuicConnectionDriver | None":
        """Route one datagram; ``queued`` is how long it waited in the socket queue."""
        parsed = destination_cid(data)
        if parsed is None:
            metrics.DATAGRAMS_DROPPED.labels("malformed").inc()
            return None
        cid, is_long = parsed
        driver = self._connections.get(cid)
        is_new = driver is None
        if is_new:
            if not is_long or self._accept is None:
                metrics.DATAGRAMS_DROPPED.labels("unknown_connection").inc()
                return None
            version = int.from_bytes(data[1:5], "big")
            if version not in SUPPORTED_VERSIONS:
                self._send_version_negotiation(data, addr, cid)
                return None
            # Only an Initial packet (type 0 in QUIC v1) may open a connection.
            if (data[0] & 0x30) != 0 or len(data) < MIN_INITIAL_DATAGRAM:
                metrics.DATAGRAMS_DROPPED.labels("not_initial").inc()
                return None
            if queued > STALE_INITIAL_SECONDS:
                metrics.DATAGRAMS_DROPPED.labels("stale_initial").inc()
                return None
            driver = self._accept(self, data, addr, cid, version)
            if driver is None:
                return None
        try:
            driver.datagram_received(data, addr, now)
        except Exception:
            # aioquic validates packets itself; anything escaping it is a bug
            # in handling this peer's input, which must not stop the endpoint.
            log.exception("dropping connection to %s after an internal error", addr)
            driver.close("internal error", error_code=0x1)
            metrics.DATAGRAMS_DROPPED.labels("internal_error").inc()
        if is_new and not driver.is_viable():
            # Not a real Initial (aioquic could not decrypt it): forget it
            # without a word, as RFC 9000 §5.2.2 allows.
            metrics.DATAGRAMS_DROPPED.labels("bad_initial").inc()
            driver.abandon("undecryptable initial packet")
            return None
        return driver

    def _send_version_negotiation(self, data: bytes, addr: tuple, dcid: bytes) -> None:
        if len(data) < MIN_INITIAL_DATAGRAM or len(data) < 7 + len(dcid):
            metrics.DATAGRAMS_DROPPED.labels("bad_version").inc()
            return
        scid_offset = 6 + len(dcid)
        scid_length = data[scid_offset]
        scid = data[scid_offset + 1 : scid_offset + 1 + scid_length]
        if scid_length > 20 or len(scid) != scid_length:
            metrics.DATAGRAMS_DROPPED.labels("malformed").inc()
            return
        self.send_datagram(
            encode_quic_version_negotiation(
                source_cid=dcid, destination_cid=scid, supported_versions=SUPPORTED_VERSIONS
            ),
            addr,
        )

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            trio.lowlevel.notify_closing(self.sock)
            self.sock.close()
