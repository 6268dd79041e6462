"""The libp2p host: endpoints, connections, streams and protocol handlers.

A :class:`Host` listens on QUIC endpoints (IPv6 and IPv4), dials peers by
multiaddr or by peer ID (through the peerstore), reuses one connection per
peer, negotiates every stream with multistream-select and runs the handler
registered for the agreed protocol. Limits bound connections (in total and
per peer), streams per connection and concurrent inbound handlers.

The host is a composition of its parts: dialling (``dialing.py``),
accepting (``accepting.py``), the connection table (``connection_table.py``)
with trimming (``trimming.py``) and datagram-size probes (``mtu.py``),
session tickets (``tickets.py``) and stream negotiation (``negotiation.py``).

Use it as ``async with open_host(identity, listen=[...]) as host: ...``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import ssl
from typing import AsyncIterator, Callable

import trio
from aioquic.quic.configuration import QuicConfiguration

from .accepting import Acceptor
from .config import AGENT_VERSION, HostConfig
from .connection import QuicConnectionDriver, QuicStream
from .connection_table import ConnectionTable
from .connmgr import ConnectionManager
from .dialing import Dialer
from .endpoint import SUPPORTED_VERSIONS, QuicEndpoint, make_udp_socket
from .errors import TransportError
from .identity import Identity, PeerId
from .interfaces import expand_wildcard
from .multiaddrs import MultiaddrError, QuicAddress, format_quic_address, parse_quic_address
from .negotiation import StreamDispatcher, StreamHandler, open_negotiated_stream, peer_label
from .peerstore import Peerstore
from .tls import ALPN, make_certificate
from .trimming import trim_connections, trim_periodically

__all__ = ["AGENT_VERSION", "Host", "HostConfig", "StreamHandler", "open_host", "peer_label"]


class Host:
    def __init__(self, identity: Identity, config: HostConfig | None = None):
        self.identity = identity
        self.peer_id = identity.peer_id
        self.config = config or HostConfig()
        self.peerstore = Peerstore()
        # Protocols protect the peers they must stay connected to here.
        self.connection_manager = ConnectionManager(self.config.connection_manager)
        self._nursery: trio.Nursery | None = None
        self._peer_filter: Callable[[PeerId], str | None] | None = None
        self._endpoints: list[QuicEndpoint] = []
        self._streams = StreamDispatcher(
            self.config.max_inbound_handlers, self.config.negotiation_timeout, self.start_soon
        )
        self._connections = ConnectionTable(
            self.config, self.start_soon, self._streams.on_new_stream, self.trim_connections
        )
        # Called with each new connection, and with each identify record
        # received (the peer's protocols are in the peerstore by then).
        self.on_connection: list[Callable[[QuicConnectionDriver], None]] = self._connections.on_connection
        self.on_identified: list[Callable] = []
        certificate, private_key = make_certificate(identity)
        base = QuicConfiguration(
            alpn_protocols=[ALPN],
            certificate=certificate,
            private_key=private_key,
            verify_mode=ssl.CERT_NONE,  # verified by our libp2p TLS hooks instead
            idle_timeout=self.config.idle_timeout,
            max_datagram_frame_size=None,
            # The versions the endpoint accepts; aioquic would also derive
            # QUIC v2's Initial keys for every connection.
            supported_versions=list(SUPPORTED_VERSIONS),
        )
        self.acceptor = Acceptor(
            self.config, dataclasses.replace(base, is_client=False), self._connections, self.start_soon
        )
        self.dialer = Dialer(
            self.config,
            dataclasses.replace(base, is_client=True),
            self._connections,
            self._endpoint_for,
            self.start_soon,
        )

    # -- lifecycle -------------------------------------------------------------

    def start_soon(self, async_fn, *args) -> None:
        """Run a task for as long as the host runs."""
        if self._nursery is None:
            raise RuntimeError("the host is not running: use open_host()")
        self._nursery.start_soon(async_fn, *args)

    async def start(self, async_fn, *args):
        """Run a task for as long as the host runs, once it reports it started."""
        if self._nursery is None:
            raise RuntimeError("the host is not running: use open_host()")
        return await self._nursery.start(async_fn, *args)

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
            self._add_endpoint(self._new_endpoint(sock, family))

    def _new_endpoint(self, sock: socket.socket, family: int) -> QuicEndpoint:
        return QuicEndpoint(sock, family, self.acceptor.accept, spin_seconds=self.config.busy_poll_seconds)

    def _add_endpoint(self, endpoint: QuicEndpoint) -> None:
        self._endpoints.append(endpoint)
        self.start_soon(endpoint.run)

    def _endpoint_for(self, family: int) -> QuicEndpoint:
        for endpoint in self._endpoints:
            if endpoint.family == family and not endpoint.closed:
                return endpoint
        # A dial-only host (e.g. `hypermesh ping`) gets an ephemeral endpoint.
        host = "::" if family == socket.AF_INET6 else "0.0.0.0"
        endpoint = self._new_endpoint(make_udp_socket(family, host, 0), family)
        endpoint.listening = False
        self._add_endpoint(endpoint)
        return endpoint

    def migrate(self, driver: QuicConnectionDriver) -> QuicEndpoint:
        """Move a connection we dialled to a fresh local socket (a new port).

        What a NAT rebinding or a change of local address does to a client;
        QUIC keeps the connection (the peer follows the connection ID).
        Returns the new endpoint.
        """
        if not driver.is_client:
            raise TransportError("only the dialling side migrates a connection")
        family = driver.endpoint.family
        endpoint = self._new_endpoint(make_udp_socket(family, driver.endpoint.local_host, 0), family)
        endpoint.listening = False
        self._add_endpoint(endpoint)
        old = driver.endpoint
        driver.move_to(endpoint)
        if not old.listening and old.connection_count == 0:
            old.close()  # an ephemeral socket nothing uses any more
            self._endpoints.remove(old)
        return endpoint

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
        self.acceptor.closing = True
        with trio.move_on_after(2) as scope:
            scope.shield = True
            await self._connections.close_all("host shutting down")
        for endpoint in self._endpoints:
            endpoint.close()

    # -- peer policy -----------------------------------------------------------

    def set_peer_filter(self, peer_filter: Callable[[PeerId], str | None] | None) -> None:
        """Refuse the peers ``peer_filter`` gives a reason for (the trust layer's shun list).

        Inbound connections from them are refused once the handshake has
        proved who they are; dials to them are not made; connections already
        open are left to :meth:`disconnect`.
        """
        self.acceptor.peer_filter = peer_filter
        self._peer_filter = peer_filter

    def on_misbehaviour(self, listener: Callable[[PeerId, str], None]) -> None:
        """Call ``listener(peer, reason)`` when an authenticated peer breaks the protocol: a QUIC error
        its packets caused (we closed its connection), a malformed multistream negotiation, or a
        handler's ProtocolError (a malformed identify record, say). The trust layer counts these."""
        self._connections.on_misbehaviour.append(listener)
        self._streams.on_misbehaviour.append(listener)

    def _check_peer_allowed(self, peer_id: PeerId) -> None:
        reason = self._peer_filter(peer_id) if self._peer_filter is not None else None
        if reason is not None:
            raise TransportError(f"not dialling {peer_id}: {reason}")

    def disconnect(self, peer_id: PeerId, reason: str) -> int:
        """Close every connection to ``peer_id``; returns how many."""
        connections = self.connections_to(peer_id)
        for driver in connections:
            driver.close(reason)
        return len(connections)

    # -- handlers --------------------------------------------------------------

    def set_stream_handler(
        self, protocol: str, handler: StreamHandler, early_data: bool = False, *, replay_safe: bool = True
    ) -> None:
        """Serve ``protocol``.

        ``early_data``: its streams may come in 0-RTT, before the handshake
        completes (other protocols' early streams are reset unserved).
        ``replay_safe`` (with ``early_data``): every request of the protocol
        is replay-safe, so :meth:`new_stream` sends it early by default. A
        protocol that also carries writes passes False: its handler must
        not act on a write while ``stream.early and not
        stream.handshake_confirmed`` (see :meth:`QuicStream.wait_for_handshake`),
        and its callers choose per stream with ``new_stream(…, replay_safe=)``.
        """
        self._streams.set_handler(protocol, handler, early_data, replay_safe)

    def remove_stream_handler(self, protocol: str) -> None:
        self._streams.remove_handler(protocol)

    @property
    def protocols(self) -> list[str]:
        return self._streams.protocols

    # -- connections -----------------------------------------------------------

    def connected_peers(self) -> list[PeerId]:
        return self._connections.connected_peers()

    def connections_to(self, peer_id: PeerId) -> list[QuicConnectionDriver]:
        return self._connections.connections_to(peer_id)

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    async def connect(self, addr: str | QuicAddress) -> QuicConnectionDriver:
        """Connect to a full multiaddr (``…/p2p/ID`` required), reusing a live connection."""
        address = addr if isinstance(addr, QuicAddress) else parse_quic_address(addr)
        if address.peer_id is None:
            raise MultiaddrError(f"{addr} lacks /p2p/<peer id>: the peer must be authenticated")
        self._check_peer_allowed(address.peer_id)
        existing = self._connections.newest_to(address.peer_id)
        if existing is not None:
            return existing
        return await self.dialer.dial(address.peer_id, [address])

    async def connection_to(self, peer_id: PeerId, early_data: bool = False) -> QuicConnectionDriver:
        """A live connection to ``peer_id``, dialling its known addresses if needed.

        ``early_data``: a resumed dial may return before its handshake
        completes (see :meth:`Dialer.dial`); only for replay-safe protocols.
        """
        if peer_id == self.peer_id:
            raise TransportError("cannot dial ourselves")
        self._check_peer_allowed(peer_id)
        existing = self._connections.newest_to(peer_id)
        if existing is not None:
            return existing
        addresses = []
        for text in self.peerstore.addrs(peer_id):
            try:
                addresses.append(parse_quic_address(text))
            except MultiaddrError:
                continue
        if not addresses:
            raise TransportError(f"no known address for {peer_id}")
        return await self.dialer.dial(peer_id, addresses, early_data)

    def trim_connections(self) -> int:
        """Close idle connections if we hold more than the high water mark.

        Runs on every new connection and periodically; returns how many it closed.
        """
        return trim_connections(self.connection_manager, self._connections.all())

    # -- streams ---------------------------------------------------------------

    async def new_stream(
        self, peer_id: PeerId, protocols: list[str], *, replay_safe: bool | None = None
    ) -> QuicStream:
        """Open a stream to ``peer_id`` and agree on one of ``protocols``.

        ``replay_safe``: whether everything the caller will send on the
        stream is replay-safe, so that it may ride in 0-RTT (a resumed dial
        to a peer we have no connection to). None: as the protocols were
        registered (:meth:`set_stream_handler`); False: never in 0-RTT; True:
        the caller vouches for its requests (the peer must serve the
        protocol in early data, or it resets the stream).
        """
        early = self._may_send_early(protocols, replay_safe)
        driver = await self.connection_to(peer_id, early)
        return await self._open_stream(driver, protocols, early)

    async def open_stream_on(
        self, driver: QuicConnectionDriver, protocols: list[str], *, replay_safe: bool | None = None
    ) -> QuicStream:
        """Open a stream on ``driver``; ``replay_safe`` as for :meth:`new_stream`."""
        return await self._open_stream(driver, protocols, self._may_send_early(protocols, replay_safe))

    def _may_send_early(self, protocols: list[str], replay_safe: bool | None) -> bool:
        if replay_safe is None:
            replay_safe = set(protocols) <= self._streams.replay_safe_protocols
        return self.config.enable_early_data and replay_safe

    async def _open_stream(self, driver: QuicConnectionDriver, protocols: list[str], early: bool) -> QuicStream:
        return await open_negotiated_stream(driver, protocols, self.config.negotiation_timeout, early)


@contextlib.asynccontextmanager
async def open_host(
    identity: Identity, listen: list[str] | None = None, config: HostConfig | None = None, *, serve_perf: bool = True
) -> AsyncIterator[Host]:
    """Run a host with ping, identify and (unless ``serve_perf`` is False) perf until the block exits."""
    from . import identify, perf, ping

    host = Host(identity, config)
    async with trio.open_nursery() as nursery:
        host._nursery = nursery
        ping.install(host)
        identify.install(host)
        if serve_perf:
            perf.install(host)
        host.start_soon(trim_periodically, host.trim_connections, host.config.connection_manager.silence_period)
        if listen:
            await host.listen(listen)
        try:
            yield host
        finally:
            await host.aclose()
            nursery.cancel_scope.cancel()
