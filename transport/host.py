"""The libp2p host: endpoints, connections, streams and protocol handlers.

A :class:`Host` listens on QUIC endpoints (IPv6 and IPv4), dials peers by
multiaddr or by peer ID (through the peerstore), reuses one connection per
peer, negotiates every stream with multistream-select and runs the handler
registered for the agreed protocol. Limits bound connections (in total and
per peer), streams per connection and concurrent inbound handlers.

Use it as ``async with open_host(identity, listen=[...]) as host: ...``.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import AsyncIterator, Awaitable, Callable

import trio
from aioquic.quic.configuration import QuicConfiguration

from . import metrics
from .connection import STREAM_ERROR_PROTOCOL, QuicConnectionDriver, QuicStream
from .connmgr import ConnectionManager, ConnectionManagerConfig, ConnectionState
from .endpoint import MAX_UDP_PAYLOAD, SPIN_SECONDS, QuicEndpoint, make_udp_socket, route_mtu
from .errors import (
    ConnectionClosed,
    HandshakeError,
    NegotiationError,
    ProtocolError,
    ResourceLimitError,
    StreamReset,
    TransportError,
)
from .identity import Identity, PeerId
from .interfaces import expand_wildcard
from .multiaddrs import (
    MultiaddrError,
    QuicAddress,
    format_quic_address,
    parse_quic_address,
    resolve,
    sockaddr_to_multiaddr,
)
from .multistream import Negotiator
from .peerstore import Peerstore
from .quic_hooks import Libp2pQuicConnection
from .tls import ALPN, make_certificate

log = logging.getLogger("hypermesh.transport")

StreamHandler = Callable[[QuicStream], Awaitable[None]]

AGENT_VERSION = "hypermesh/0.1.0"
# QUIC headers (IPv6 40 + UDP 8) subtracted from a route MTU.
IP_UDP_OVERHEAD = {socket.AF_INET: 28, socket.AF_INET6: 48}
# Datagram sizes we try after the handshake, largest first (RFC 8899 search):
# loopback and jumbo-frame paths take the large ones; 1,452 fits Ethernet
# with IPv6; 1,200 (QUIC's minimum) is where we start and stay otherwise.
PROBE_SIZES = (16384, 8952, 1452)
PROBE_TIMEOUT = 1.0
PROBE_DELAY = 0.05
# Session tickets remembered, as a server (issued, with their peers) and as a
# client (received, one per peer).
MAX_TICKETS = 10_000
# The periodic connection trim runs at least this far apart.
MIN_TRIM_INTERVAL = 1.0


@dataclass
class HostConfig:
    max_connections: int = 4096
    max_connections_per_peer: int = 2
    max_streams_per_connection: int = 256
    max_inbound_handlers: int = 8192
    idle_timeout: float = 30.0  # QUIC idle timeout: silence this long ends a connection
    idle_connection_timeout: float = 300.0  # a connection with no stream for this long is closed
    handshake_timeout: float = 10.0
    negotiation_timeout: float = 10.0
    agent_version: str = AGENT_VERSION
    probe_datagram_size: bool = True
    enable_resumption: bool = True
    # Poll the socket this long after traffic instead of sleeping (lower
    # latency, more CPU). 0 where many hosts share a process or the machine
    # has no core to spare: spinning endpoints then starve the ones with work.
    busy_poll_seconds: float = SPIN_SECONDS
    # When to close idle connections (high/low water marks, grace period).
    connection_manager: ConnectionManagerConfig = ConnectionManagerConfig()


class _ProbeOutcome:
    """What became of one datagram-size probe."""

    def __init__(self) -> None:
        self.settled = trio.Event()
        self.acknowledged = False

    def set(self, acknowledged: bool) -> None:
        if not self.settled.is_set():
            self.acknowledged = acknowledged
            self.settled.set()


class _PendingDial:
    """A dial in progress, for callers who want the same peer meanwhile."""

    def __init__(self) -> None:
        self.done = trio.Event()
        self.error: TransportError | None = None


class _BoundedTickets:
    """Session tickets, oldest dropped first beyond ``MAX_TICKETS``."""

    def __init__(self) -> None:
        self._tickets: collections.OrderedDict = collections.OrderedDict()

    def put(self, key, value) -> None:
        self._tickets[key] = value
        self._tickets.move_to_end(key)
        while len(self._tickets) > MAX_TICKETS:
            self._tickets.popitem(last=False)

    def get(self, key):
        return self._tickets.get(key)

    def pop(self, key):
        return self._tickets.pop(key, None)


class _ServerTickets(_BoundedTickets):
    """Session tickets we issued, with the peer each was issued to."""

    def store(self, ticket, peer_id: PeerId | None) -> None:
        if peer_id is not None:
            self.put(ticket.ticket, (ticket, peer_id))

    def lookup(self, label: bytes):
        # Single use: a replayed ticket falls back to a full handshake.
        return self.pop(label)


class Host:
    def __init__(self, identity: Identity, config: HostConfig | None = None):
        self.identity = identity
        self.peer_id = identity.peer_id
        self.config = config or HostConfig()
        self.peerstore = Peerstore()
        # Protocols protect the peers they must stay connected to here.
        self.connection_manager = ConnectionManager(self.config.connection_manager)
        self._handlers: dict[str, StreamHandler] = {}
        self._endpoints: list[QuicEndpoint] = []
        self._connections: dict[PeerId, list[QuicConnectionDriver]] = {}
        self._all_connections: set[QuicConnectionDriver] = set()
        self._pending_dials: dict[PeerId, _PendingDial] = {}
        self._client_tickets = _BoundedTickets()
        self._server_tickets = _ServerTickets()
        self._inbound_handlers = 0
        self._nursery: trio.Nursery | None = None
        self._closing = False
        # Called with each new connection, and with each identify record
        # received (the peer's protocols are in the peerstore by then).
        self.on_connection: list[Callable[[QuicConnectionDriver], None]] = []
        self.on_identified: list[Callable] = []
        certificate, private_key = make_certificate(identity)
        base = QuicConfiguration(
            alpn_protocols=[ALPN],
            certificate=certificate,
            private_key=private_key,
            verify_mode=ssl.CERT_NONE,  # verified by our libp2p TLS hooks instead
            idle_timeout=self.config.idle_timeout,
            max_datagram_frame_size=None,
        )
        self._server_config = dataclasses.replace(base, is_client=False)
        self._client_config = dataclasses.replace(base, is_client=True)

    # -- lifecycle -------------------------------------------------------------

    async def listen(self, addrs: list[str]) -> None:
        """Bind an endpoint per multiaddr (port 0 picks a free port)."""
        assert self._nursery is not None, "use open_host()"
        for text in addrs:
            address = parse_quic_address(text)
            if address.is_dns:
                raise MultiaddrError(f"cannot listen on a DNS name: {text}")
            family = address.family()
            try:
                sock = make_udp_socket(family, address.host, address.port)
            except OSError as exc:
                raise TransportError(f"cannot listen on {text}: {exc.strerror or exc}") from None
            self._add_endpoint(QuicEndpoint(sock, family, self._accept, spin_seconds=self.config.busy_poll_seconds))

    def _add_endpoint(self, endpoint: QuicEndpoint) -> None:
        self._endpoints.append(endpoint)
        self._nursery.start_soon(endpoint.run)

    def listen_addrs(self) -> list[str]:
        """Full multiaddrs (with /p2p) of every endpoint we listen on.

        A wildcard bind (``::``, ``0.0.0.0``) is reported as the addresses of
        the local interfaces, which peers can dial.
        """
        return [
            format_quic_address(host, endpoint.local_port, self.peer_id)
            for endpoint in self._endpoints
            if endpoint.listening
            for host in expand_wildcard(endpoint.local_host)
        ]

    async def aclose(self) -> None:
        self._closing = True
        with trio.move_on_after(2) as scope:
            scope.shield = True
            async with trio.open_nursery() as nursery:
                for driver in list(self._all_connections):
                    nursery.start_soon(driver.aclose, "host shutting down")
        for endpoint in self._endpoints:
            endpoint.close()

    # -- handlers --------------------------------------------------------------

    def set_stream_handler(self, protocol: str, handler: StreamHandler) -> None:
        self._handlers[protocol] = handler

    def remove_stream_handler(self, protocol: str) -> None:
        self._handlers.pop(protocol, None)

    @property
    def protocols(self) -> list[str]:
        return sorted(self._handlers)

    # -- connections -----------------------------------------------------------

    def connected_peers(self) -> list[PeerId]:
        return [peer for peer, drivers in self._connections.items() if drivers]

    def connections_to(self, peer_id: PeerId) -> list[QuicConnectionDriver]:
        return [driver for driver in self._connections.get(peer_id, []) if not driver.closed]

    @property
    def connection_count(self) -> int:
        return len(self._all_connections)

    async def connect(self, addr: str | QuicAddress) -> QuicConnectionDriver:
        """Connect to a full multiaddr (``…/p2p/ID`` required), reusing a live connection."""
        address = addr if isinstance(addr, QuicAddress) else parse_quic_address(addr)
        if address.peer_id is None:
            raise MultiaddrError(f"{addr} lacks /p2p/<peer id>: the peer must be authenticated")
        existing = self.connections_to(address.peer_id)
        if existing:
            return existing[0]
        return await self._dial_deduplicated(address.peer_id, [address])

    async def connection_to(self, peer_id: PeerId) -> QuicConnectionDriver:
        """A live connection to ``peer_id``, dialling its known addresses if needed."""
        if peer_id == self.peer_id:
            raise TransportError("cannot dial ourselves")
        existing = self.connections_to(peer_id)
        if existing:
            return existing[0]
        addresses = []
        for text in self.peerstore.addrs(peer_id):
            try:
                addresses.append(parse_quic_address(text))
            except MultiaddrError:
                continue
        if not addresses:
            raise TransportError(f"no known address for {peer_id}")
        return await self._dial_deduplicated(peer_id, addresses)

    async def _dial_deduplicated(self, peer_id: PeerId, addresses: list[QuicAddress]) -> QuicConnectionDriver:
        """One dial per peer at a time: concurrent callers share its outcome."""
        pending = self._pending_dials.get(peer_id)
        if pending is not None:
            await pending.done.wait()
            existing = self.connections_to(peer_id)
            if existing:
                return existing[0]
            raise pending.error or HandshakeError(f"connection to {peer_id} closed as it opened")
        pending = self._pending_dials[peer_id] = _PendingDial()
        try:
            return await self._dial_any(peer_id, addresses)
        except BaseException as exc:
            pending.error = exc if isinstance(exc, TransportError) else None
            raise
        finally:
            del self._pending_dials[peer_id]
            pending.done.set()

    async def _dial_any(self, peer_id: PeerId, addresses: list[QuicAddress]) -> QuicConnectionDriver:
        errors = []
        # IPv6 first, then IPv4: try each address in turn until one works.
        for address in sorted(addresses, key=lambda a: a.kind != "ip6"):
            try:
                for family, sockaddr in await resolve(address):
                    try:
                        return await self._dial(peer_id, family, sockaddr)
                    except HandshakeError as exc:
                        if "mismatch" in str(exc):
                            raise
                        errors.append(f"{sockaddr_to_multiaddr(sockaddr)}: {exc}")
            except MultiaddrError as exc:
                errors.append(str(exc))
        raise HandshakeError(f"could not connect to {peer_id}: " + "; ".join(errors))

    def _endpoint_for(self, family: int) -> QuicEndpoint:
        for endpoint in self._endpoints:
            if endpoint.family == family and not endpoint.closed:
                return endpoint
        # A dial-only host (e.g. `hypermesh ping`) gets an ephemeral endpoint.
        host = "::" if family == socket.AF_INET6 else "0.0.0.0"
        endpoint = QuicEndpoint(
            make_udp_socket(family, host, 0), family, self._accept, spin_seconds=self.config.busy_poll_seconds
        )
        endpoint.listening = False
        self._add_endpoint(endpoint)
        return endpoint

    async def _dial(self, peer_id: PeerId, family: int, sockaddr: tuple) -> QuicConnectionDriver:
        self._check_connection_limit()
        endpoint = self._endpoint_for(family)
        ticket = self._client_tickets.get(peer_id) if self.config.enable_resumption else None
        if ticket is not None and not ticket.is_valid:
            ticket = None
        configuration = dataclasses.replace(self._client_config, session_ticket=ticket)
        quic = Libp2pQuicConnection(
            configuration=configuration,
            expected_peer_id=peer_id,
            resumed_peer_id=peer_id if ticket is not None else None,
            session_ticket_handler=lambda new_ticket: self._client_tickets.put(peer_id, new_ticket),
        )
        driver = self._new_driver(endpoint, quic, sockaddr, is_client=True)
        started = trio.current_time()
        quic.connect(sockaddr, now=started)
        driver.transmit()
        if not await driver.wait_for_handshake(self.config.handshake_timeout):
            error = driver.handshake_error or HandshakeError(
                f"handshake with {sockaddr_to_multiaddr(sockaddr)} timed out after {self.config.handshake_timeout:g} s"
            )
            driver.close("handshake failed")
            metrics.CONNECTIONS_TOTAL.labels("outbound", "failed").inc()
            raise error
        self._on_established(driver, "outbound", started)
        return driver

    def _check_connection_limit(self) -> None:
        if len(self._all_connections) >= self.config.max_connections:
            raise ResourceLimitError(f"connection limit of {self.config.max_connections} reached")

    def _new_driver(self, endpoint, quic, remote_addr, *, is_client: bool) -> QuicConnectionDriver:
        driver = QuicConnectionDriver(
            endpoint,
            quic,
            remote_addr,
            is_client=is_client,
            on_new_stream=self._on_new_stream,
            on_closed=self._on_connection_closed,
            max_streams=self.config.max_streams_per_connection,
        )
        driver.remote_multiaddr = sockaddr_to_multiaddr(remote_addr)
        endpoint.register_cid(quic.host_cid, driver)
        self._all_connections.add(driver)
        self._nursery.start_soon(driver.run_timers)
        return driver

    def _accept(self, endpoint: QuicEndpoint, data: bytes, addr: tuple, cid: bytes, version: int):
        if self._closing or len(self._all_connections) >= self.config.max_connections:
            metrics.CONNECTIONS_TOTAL.labels("inbound", "refused").inc()
            return None
        quic = Libp2pQuicConnection(
            configuration=self._server_config,
            original_destination_connection_id=cid,
            server_ticket_lookup=self._server_tickets.lookup if self.config.enable_resumption else None,
            session_ticket_handler=lambda ticket: self._server_tickets.store(ticket, quic.remote_peer_id),
        )
        driver = self._new_driver(endpoint, quic, addr, is_client=False)
        endpoint.register_cid(cid, driver)
        self._nursery.start_soon(self._await_inbound_handshake, driver, trio.current_time())
        return driver

    async def _await_inbound_handshake(self, driver: QuicConnectionDriver, started: float) -> None:
        if not await driver.wait_for_handshake(self.config.handshake_timeout):
            log.debug("inbound handshake from %s failed: %s", driver.remote_multiaddr, driver.handshake_error)
            driver.close("handshake failed")
            metrics.CONNECTIONS_TOTAL.labels("inbound", "failed").inc()
            return
        peer_id = driver.remote_peer_id
        if len(self.connections_to(peer_id)) >= self.config.max_connections_per_peer:
            driver.close("too many connections from this peer")
            metrics.CONNECTIONS_TOTAL.labels("inbound", "refused").inc()
            return
        self._on_established(driver, "inbound", started)

    def _on_established(self, driver: QuicConnectionDriver, direction: str, started: float) -> None:
        peer_id = driver.remote_peer_id
        self._connections.setdefault(peer_id, []).append(driver)
        driver.user_data["direction"] = direction
        metrics.CONNECTIONS_OPEN.labels(direction).inc()
        metrics.CONNECTIONS_TOTAL.labels(direction, "established").inc()
        metrics.HANDSHAKE_SECONDS.labels(direction, str(driver.resumed).lower()).observe(
            trio.current_time() - started
        )
        self._nursery.start_soon(driver.run_keepalive, self.config.idle_timeout, self.config.idle_connection_timeout)
        if self.config.probe_datagram_size:
            self._nursery.start_soon(self._probe_datagram_size, driver)
        else:
            driver.probing_done.set()
        for callback in self.on_connection:
            callback(driver)
        self.trim_connections()

    def trim_connections(self) -> int:
        """Close idle connections if we hold more than the high water mark.

        Runs on every new connection and periodically; returns how many it closed.
        """
        now = trio.current_time()
        if not self.connection_manager.wants_trim(len(self._all_connections), now):
            return 0
        states = [
            ConnectionState(d, d.remote_peer_id, d.opened_at, d.stream_count, d.last_stream_activity)
            for d in self._all_connections
        ]
        chosen = self.connection_manager.select_for_trim(states, now)
        for driver in chosen:
            driver.close("idle connection trimmed (over the high water mark)")
        metrics.CONNECTIONS_TRIMMED.inc(len(chosen))
        if chosen:
            log.debug("closed %d idle connections; %d remain", len(chosen), len(self._all_connections) - len(chosen))
        return len(chosen)

    async def _trim_connections_periodically(self) -> None:
        # Connections that were busy at the last trim may be idle now.
        interval = max(MIN_TRIM_INTERVAL, self.config.connection_manager.silence_period)
        while True:
            await trio.sleep(interval)
            self.trim_connections()

    def _on_connection_closed(self, driver: QuicConnectionDriver) -> None:
        self._all_connections.discard(driver)
        driver.endpoint.unregister_connection(driver)
        peer_id = driver.remote_peer_id
        drivers = self._connections.get(peer_id)
        if drivers and driver in drivers:
            drivers.remove(driver)
            metrics.CONNECTIONS_OPEN.labels(driver.user_data.get("direction", "inbound")).dec()
            if not drivers:
                del self._connections[peer_id]

    async def _probe_datagram_size(self, driver: QuicConnectionDriver) -> None:
        """Raise the datagram size to the largest the path carries (RFC 8899).

        Waits a moment first: a short-lived connection (one ping, one lookup)
        never needs large datagrams, and the handshake's own work finishes
        sooner without probes competing with it.
        """
        try:
            await trio.sleep(PROBE_DELAY)
            await self._run_probes(driver)
        finally:
            driver.probing_done.set()

    async def _run_probes(self, driver: QuicConnectionDriver) -> None:
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
            outcome = _ProbeOutcome()
            driver.send_probe(size, outcome.set)
            with trio.move_on_after(PROBE_TIMEOUT):
                await outcome.settled.wait()
            if outcome.acknowledged:
                metrics.DATAGRAM_SIZE.set(size)
                log.debug("datagram size to %s raised to %d", driver.remote_multiaddr, size)
                return

    # -- streams ---------------------------------------------------------------

    async def new_stream(self, peer_id: PeerId, protocols: list[str]) -> QuicStream:
        """Open a stream to ``peer_id`` and agree on one of ``protocols``."""
        driver = await self.connection_to(peer_id)
        return await self.open_stream_on(driver, protocols)

    async def open_stream_on(self, driver: QuicConnectionDriver, protocols: list[str]) -> QuicStream:
        stream = driver.open_stream()
        negotiator = Negotiator.dialer(protocols)
        if len(protocols) == 1:
            # One proposal: nothing to choose, so skip the round trip and let
            # the first read take the listener's confirmation.
            stream.protocol = protocols[0]
            stream.negotiate_lazily(negotiator)
            await stream.send_all(negotiator.initial_bytes())
            metrics.STREAMS_TOTAL.labels("outbound", stream.protocol).inc()
            return stream
        try:
            with trio.fail_after(self.config.negotiation_timeout):
                await stream.send_all(negotiator.initial_bytes())
                while negotiator.result is None:
                    data = await stream.receive_some()
                    if not data:
                        raise NegotiationError(f"{peer_label(driver)} closed the stream during negotiation")
                    reply = negotiator.receive_data(data)
                    if reply:
                        await stream.send_all(reply)
        except trio.TooSlowError:
            await stream.reset(STREAM_ERROR_PROTOCOL)
            raise NegotiationError(f"protocol negotiation with {peer_label(driver)} timed out") from None
        except (ProtocolError, StreamReset, ConnectionClosed):
            await stream.reset(STREAM_ERROR_PROTOCOL)
            raise
        stream.protocol = negotiator.result.protocol
        stream.unread(negotiator.result.leftover)
        metrics.STREAMS_TOTAL.labels("outbound", stream.protocol).inc()
        return stream

    def _on_new_stream(self, stream: QuicStream) -> None:
        if self._inbound_handlers >= self.config.max_inbound_handlers or self._nursery is None:
            metrics.STREAMS_REFUSED.labels("handler_limit").inc()
            stream._connection.quic.reset_stream(stream.stream_id, 1)
            stream._close_locally(stop_reading=True, error_code=1)
            return
        self._inbound_handlers += 1
        self._nursery.start_soon(self._serve_stream, stream)

    async def _serve_stream(self, stream: QuicStream) -> None:
        try:
            negotiator = Negotiator.listener(self._handlers)
            try:
                with trio.fail_after(self.config.negotiation_timeout):
                    # Streams may arrive with the client's Finished (or in
                    # 0-RTT); serve them once the peer is authenticated.
                    await stream.connection.handshake_complete.wait()
                    await stream.send_all(negotiator.initial_bytes())
                    while negotiator.result is None:
                        data = await stream.receive_some()
                        if not data:
                            await stream.aclose()
                            return
                        reply = negotiator.receive_data(data)
                        if reply:
                            await stream.send_all(reply)
            except (trio.TooSlowError, ProtocolError) as exc:
                metrics.STREAMS_REFUSED.labels("negotiation").inc()
                log.debug("stream from %s refused: %s", stream.remote_peer, exc)
                await stream.reset(STREAM_ERROR_PROTOCOL)
                return
            stream.protocol = negotiator.result.protocol
            stream.unread(negotiator.result.leftover)
            metrics.STREAMS_TOTAL.labels("inbound", stream.protocol).inc()
            handler = self._handlers.get(stream.protocol)
            if handler is None:
                await stream.reset(STREAM_ERROR_PROTOCOL)
                return
            try:
                await handler(stream)
            except (TransportError, ConnectionClosed) as exc:
                log.debug("%s handler for %s ended: %s", stream.protocol, stream.remote_peer, exc)
                await stream.reset(STREAM_ERROR_PROTOCOL)
                return
            except Exception:
                log.exception("%s handler failed for %s", stream.protocol, stream.remote_peer)
                await stream.reset(STREAM_ERROR_PROTOCOL)
                return
            await stream.aclose()
        except (StreamReset, ConnectionClosed):
            await stream.reset()  # frees the stream's slot; a no-op once closed
        finally:
            self._inbound_handlers -= 1


def peer_label(driver: QuicConnectionDriver) -> str:
    return f"{driver.remote_peer_id or '?'} at {driver.remote_multiaddr}"


@contextlib.asynccontextmanager
async def open_host(
    identity: Identity, listen: list[str] | None = None, config: HostConfig | None = None
) -> AsyncIterator[Host]:
    """Run a host with ping, identify and perf until the block exits."""
    from . import identify, perf, ping

    host = Host(identity, config)
    async with trio.open_nursery() as nursery:
        host._nursery = nursery
        ping.install(host)
        identify.install(host)
        perf.install(host)
        nursery.start_soon(host._trim_connections_periodically)
        if listen:
            await host.listen(listen)
        try:
            yield host
        finally:
            await host.aclose()
            nursery.cancel_scope.cancel()
