"""The trio driver: runs a :class:`KademliaCore` over a libp2p host.

All protocol decisions are the core's; this module only moves bytes. One
task sleeps until the core's timer (or until something wakes it), one task
per outbound request opens a stream, writes one length-prefixed message and
reads the answer, and the inbound handler feeds requests to the core.

Host contract (hypermesh.transport.host.Host): ``set_stream_handler(protocol,
handler, early_data, replay_safe=)``, ``remove_stream_handler``,
``new_stream(peer_id, [protocol], replay_safe=)``, ``peerstore.add_addrs/addrs/protocols``,
``connected_peers()``, ``connections_to(peer_id)`` (each with ``remote_multiaddr``),
``listen_addrs()``; streams have ``remote_peer``,
``remote_addr``, ``send_all``, ``receive_some``, ``aclose``, ``reset``, and for
0-RTT ``early``, ``handshake_confirmed`` and ``wait_for_handshake(timeout)``.

0-RTT early data: reads (``REPLAY_SAFE_TYPES``) to a peer we have no
connection to go out in a resumed dial's first flight; writes never do. As a
server, a read on a stream that came in 0-RTT is answered at once, and a
write is held until the connection's handshake completes (the peer then
proved it holds the connection's keys, so the write is not a replayed
flight) and dropped if it does not.
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
import random
import time
from typing import Callable

import trio
from multiaddr import Multiaddr

from hypermesh.transport.errors import TransportError
from hypermesh.transport.framing import BufferedReader, FramingError, frame, write_frame
from hypermesh.transport.identity import IdentityError, PeerId

from .kademlia import KadConfig, KademliaCore, Mode, OperationFinished, OutboundRequest, PeerProbed, RecordChanged
from .server import Misbehaviour, PeerMisbehaved
from .metrics import DhtMetrics
from .messages import (
    MAX_MESSAGE_SIZE,
    PROTOCOL_ID,
    REPLAY_SAFE_TYPES,
    DhtProtocolError,
    KadMessage,
    MessageType,
    PeerInfo,
    decode_message,
    encode_message,
)
from .operations import OperationResult
from .streams import StreamPool, close_quietly, in_early_data, reset_quietly

log = logging.getLogger(__name__)

# Streams we keep open at once for outbound requests: a provide sweep queues
# thousands of ADD_PROVIDER messages, which must not become thousands of dials.
MAX_OUTBOUND_STREAMS = 64
# Requests one inbound stream may carry (go-libp2p-kad-dht reuses streams),
# and how long it may sit idle between them.
MAX_REQUESTS_PER_STREAM = 100
INBOUND_IDLE_TIMEOUT = 30.0
# Inbound DHT streams served at once; more are reset at once (the spec's
# answer to any error) instead of queueing behind idle or slow peers.
MAX_INBOUND_STREAMS = 256
MAX_INBOUND_STREAMS_PER_PEER = 16
# ADD_PROVIDERs written on one outbound stream, below any server's per-stream cap.
ONE_WAY_MESSAGES_PER_STREAM = 64
# Requests to one peer pipelined on one stream (written back to back, answered
# in order). With a reused stream's earlier requests this stays below servers'
# per-stream caps (ours: MAX_REQUESTS_PER_STREAM).
PIPELINED_REQUESTS_PER_STREAM = 16
# How long we wait for a peer to close its side after our last one-way message.
ONE_WAY_DRAIN_TIMEOUT = 5.0
# How long a write that came in 0-RTT waits for its connection's handshake
# (which the transport bounds too) before it is dropped.
EARLY_WRITE_HANDSHAKE_TIMEOUT = 10.0
# How long addresses learned from DHT answers stay in the peerstore.
LEARNED_ADDR_TTL = 600.0
# What a request to an unreliable peer may end in; anything else is a bug, logged loudly.
EXPECTED_FAILURES = (TransportError, FramingError, DhtProtocolError, trio.TooSlowError)
# How often connected peers that speak the DHT are offered to the routing table.
CONNECTED_PEERS_SCAN_INTERVAL = 30.0
# A peer's first request usually arrives before identify has told us its
# protocols. Such a peer is asked a FIND_NODE of its own: if it answers, it
# serves the DHT and joins our table. At most once per this interval per peer.
PROBE_INTERVAL = 600.0
MAX_PROBED_PEERS = 4096


@functools.lru_cache(maxsize=4096)
def multiaddr_bytes(addr: str | bytes) -> bytes | None:
    """Binary multiaddr without a trailing /p2p/ part (kad peer records carry the ID apart)."""
    try:
        text = str(Multiaddr(addr))
        head, separator, _ = text.rpartition("/p2p/")
        return Multiaddr(head if separator else text).to_bytes()
    except Exception:  # an address we cannot encode is simply not passed on
        return None


def parse_peer_addr(text: str) -> PeerInfo:
    """``/ip4/…/udp/4001/quic-v1/p2p/<peer id>`` → PeerInfo (bootstrap lists)."""
    head, separator, peer_text = text.rpartition("/p2p/")
    if not separator or not head:
        raise ValueError(f"bootstrap address {text!r} must end in /p2p/<peer id>")
    try:
        peer_id = PeerId.from_base58(peer_text)
    except IdentityError as exc:
        raise ValueError(f"bootstrap address {text!r}: {exc}") from None
    raw = multiaddr_bytes(head)
    if raw is None or not raw:
        raise ValueError(f"bootstrap address {text!r} is not a multiaddr")
    return PeerInfo(peer_id, (raw,))


class _StreamEnded(DhtProtocolError):
    """The peer ended a stream before answering (a reused one may just be stale)."""


class _Waiter:
    def __init__(self) -> None:
        self.done = trio.Event()
        self.result: OperationResult | None = None


class KademliaService:
    """A DHT node on a host. Start with ``await nursery.start(service.run)``."""

    def __init__(
        self,
        host,
        store,
        *,
        mode: Mode = Mode.SERVER,
        config: KadConfig = KadConfig(),
        bootstrap: list[PeerInfo] = (),
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ):
        self.host = host
        self.store = store
        self.mode = mode
        self.config = config
        self._bootstrap = list(bootstrap)
        self._rng = rng or random.Random()
        self._wall_clock = wall_clock
        self._offset: float | None = None
        self.core: KademliaCore | None = None
        # This node's own metrics (other nodes may share the process).
        self.metrics = DhtMetrics()
        self._wakeup = trio.Event()
        self._pumped = trio.Event()
        self._waiters: dict[int, _Waiter] = {}
        self._record_listeners: list[Callable[[bytes], None]] = []
        self._misbehaviour_listeners: list[Callable[[PeerId, Misbehaviour], None]] = []
        self._probe_listeners: list[Callable[[PeerId, bool], None]] = []
        self._early_request_listeners: list[Callable[[PeerId, MessageType, str], None]] = []
        self._outbound_limit = trio.CapacityLimiter(MAX_OUTBOUND_STREAMS)
        self._request_streams = StreamPool(
            lambda peer, replay_safe: self.host.new_stream(peer, [PROTOCOL_ID], replay_safe=replay_safe)
        )
        # Requests that await an answer, queued per peer while its sender task runs.
        self._asking: dict[PeerId, list[OutboundRequest]] = {}
        self._inbound_limit = trio.CapacityLimiter(MAX_INBOUND_STREAMS)
        self._inbound_per_peer: dict[PeerId, int] = {}
        self._provide_progress = trio.Event()
        self._probed: OrderedDict[PeerId, float] = OrderedDict()
        self._nursery: trio.Nursery | None = None

    # ------------------------------------------------------------- clock

    def now(self) -> float:
        """Wall-clock seconds, advanced by trio's clock (virtual under MockClock).

        Records carry Unix times, so the core needs wall time; tying it to
        trio's clock keeps timers and record expiry on one time base.
        """
        if self._offset is None:
            self._offset = self._wall_clock() - trio.current_time()
        return self._offset + trio.current_time()

    # --------------------------------------------------------------- run

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        now = self.now()
        self.core = KademliaCore(
            self.host.peer_id,
            store=self.store,
            now=now,
            rng=self._rng,
            config=self.config,
            mode=self.mode,
            local_addrs=self._local_addrs(),
            metrics=self.metrics,
        )
        self.core.add_bootstrap_peers(self._bootstrap)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self.mode is Mode.SERVER:
                    # Registering the handler is what makes identify advertise the
                    # protocol, and so what makes other peers treat us as a server.
                    # Streams may come in 0-RTT: _serve_stream holds their writes.
                    self.host.set_stream_handler(PROTOCOL_ID, self._handle_stream, early_data=True, replay_safe=False)
                self.core.bootstrap(now)
                self._pump()
                self.host.on_identified.append(self._on_identified)
                nursery.start_soon(self._scan_connected_peers)
                nursery.start_soon(self._close_stale_request_streams)
                task_status.started()
                await self._timer_loop()
        finally:
            # Stopped: requests still arriving on the host find no handler.
            self._nursery = None
            self.host.remove_stream_handler(PROTOCOL_ID)
            if self._on_identified in self.host.on_identified:
                self.host.on_identified.remove(self._on_identified)

    def _on_identified(self, record) -> None:
        """A peer that identify shows to be a DHT server joins the routing
        table at once (as go-libp2p-kad-dht does), not at the next scan."""
        if self.core is not None and PROTOCOL_ID in record.protocols:
            peer = record.peer_id
            self.core.peer_seen(peer, self._peer_addrs(peer), self.now(), self._observed_addr(peer))
            self._pump()

    async def _timer_loop(self) -> None:
        while True:
            deadline = self.core.get_timer() - self._offset
            with trio.move_on_at(deadline):
                await self._wakeup.wait()
            self._wakeup = trio.Event()
            self.core.handle_timer(self.now())
            self._pump(wake_timer_loop=False)

    def _local_addrs(self) -> tuple[bytes, ...]:
        return tuple(a for a in (multiaddr_bytes(t) for t in self.host.listen_addrs()) if a)

    def _pump(self, wake_timer_loop: bool = True) -> None:
        """Carry out what the core asked for, then have the timer loop re-arm.

        The timer loop itself passes False: it re-reads the timer anyway, and
        waking itself would spin without ever letting (virtual) time pass.
        """
        if self._nursery is None:
            return  # stopped (or not started): nothing can be sent any more
        # Routing-table changes only happen inside the core, which every
        # input reaches through here: wake whoever waits for the table.
        self._pumped.set()
        self._pumped = trio.Event()
        one_way: dict[PeerId, list[OutboundRequest]] = {}
        for request in self.core.take_outbound():
            peer_id = request.peer.peer_id
            if not request.expects_response:
                one_way.setdefault(peer_id, []).append(request)
            elif peer_id in self._asking:
                self._asking[peer_id].append(request)  # its sender takes it next round
            else:
                self._asking[peer_id] = [request]
                self._nursery.start_soon(self._send_requests, peer_id)
        for requests in one_way.values():
            # A provide sweep sends a peer dozens of ADD_PROVIDERs at once: one
            # stream carries many, as go-libp2p-kad-dht servers allow (and ours,
            # up to MAX_REQUESTS_PER_STREAM).
            for start in range(0, len(requests), ONE_WAY_MESSAGES_PER_STREAM):
                self._nursery.start_soon(self._send_one_way, requests[start : start + ONE_WAY_MESSAGES_PER_STREAM])
        for event in self.core.take_events():
            if isinstance(event, OperationFinished):
                if event.result.kind == "provide":
                    self._provide_progress.set()
                    self._provide_progress = trio.Event()
                waiter = self._waiters.pop(event.result.op_id, None)
                if waiter is not None:
                    waiter.result = event.result
                    waiter.done.set()
            elif isinstance(event, RecordChanged):
                for listener in self._record_listeners:
                    listener(event.key)
            elif isinstance(event, PeerMisbehaved):
                self._report_misbehaviour(event.peer, event.kind)
            elif isinstance(event, PeerProbed):
                for listener in self._probe_listeners:
                    listener(event.peer, event.answered)
        if wake_timer_loop:
            self._wakeup.set()

    async def _scan_connected_peers(self) -> None:
        """Offer connected DHT servers to the routing table (found via identify).

        Also refreshes the addresses we advertise in provider records, which
        change when the host starts listening elsewhere.
        """
        while True:
            now = self.now()
            self.core.set_local_addrs(self._local_addrs())
            for peer in self.host.connected_peers():
                if PROTOCOL_ID in self.host.peerstore.protocols(peer):
                    self.core.peer_seen(peer, self._peer_addrs(peer), now, self._observed_addr(peer))
            self._pump()
            await trio.sleep(CONNECTED_PEERS_SCAN_INTERVAL)

    async def _close_stale_request_streams(self) -> None:
        while True:
            await trio.sleep(self._request_streams.max_idle_seconds)
            await self._request_streams.close_stale()

    def _sender_is_server(self, peer: PeerId, observed: bytes | None, probe: bool = True) -> bool:
        protocols = self.host.peerstore.protocols(peer)
        if probe and not protocols and peer not in self.core.routing:
            self._probe(peer, observed)
        return PROTOCOL_ID in protocols

    def _probe(self, peer: PeerId, observed: bytes | None) -> None:
        now = self.now()
        last = self._probed.pop(peer, None)
        self._probed[peer] = now if last is None or now - last >= PROBE_INTERVAL else last
        if len(self._probed) > MAX_PROBED_PEERS:
            self._probed.popitem(last=False)
        if last is None or now - last >= PROBE_INTERVAL:
            addrs = self._peer_addrs(peer) or ((observed,) if observed else ())
            self.core.probe(peer, addrs, now)

    def _observed_addr(self, peer: PeerId) -> bytes | None:
        """The address a live connection to ``peer`` comes from (None: none is open)."""
        for connection in self.host.connections_to(peer):
            observed = multiaddr_bytes(connection.remote_multiaddr)
            if observed:
                return observed
        return None

    def _peer_addrs(self, peer: PeerId) -> tuple[bytes, ...]:
        return tuple(a for a in (multiaddr_bytes(t) for t in self.host.peerstore.addrs(peer)) if a)

    # ---------------------------------------------------------- outbound

    async def _send_requests(self, peer_id: PeerId) -> None:
        """Send ``peer_id``'s queued requests, one stream at a time.

        Each round pipelines what queued meanwhile. A batched put sends each
        peer PUT_VALUEs all along its fan-out; sent side by side, each took a
        stream of its own (opened, negotiated and closed for one request),
        which cost more than the request and kept a registration waiting on
        stream set-ups. go-libp2p-kad-dht, too, keeps one stream per peer.
        """
        queue = self._asking[peer_id]
        try:
            while queue:
                batch = queue[:PIPELINED_REQUESTS_PER_STREAM]
                del queue[:PIPELINED_REQUESTS_PER_STREAM]
                await self._deliver(batch, self._ask)
        finally:
            del self._asking[peer_id]

    async def _send_one_way(self, requests: list[OutboundRequest]) -> None:
        await self._deliver(requests, self._tell)

    async def _deliver(self, requests: list[OutboundRequest], exchange) -> None:
        """Run ``exchange`` with the requests' peer (one stream carries them
        all) and report each answer as it comes; requests left unanswered
        when it fails have failed."""
        peer = requests[0].peer
        answered: set[int] = set()

        def on_answer(request: OutboundRequest, response, remote_addr) -> None:
            answered.add(request.request_id)
            self.core.handle_response(request.request_id, response, self.now(), remote_addr=remote_addr)
            self._pump()

        if peer.addrs:
            self.host.peerstore.add_addrs(peer.peer_id, list(peer.addrs), LEARNED_ADDR_TTL)
        try:
            # The deadline covers the wait for a free stream too: the core
            # gives up on a request after query_timeout, and a request sent
            # after that is pure waste (under load, such a backlog kept
            # nodes busy for minutes after the work that caused it).
            with trio.fail_after(self.config.query_timeout):
                async with self._outbound_limit:
                    requests = [r for r in requests if self.core.is_awaiting(r.request_id)]
                    if not requests:
                        return
                    await exchange(peer.peer_id, requests, on_answer)
        except Exception as exc:
            if isinstance(exc, EXPECTED_FAILURES):
                log.debug("DHT %s to %s failed: %s", requests[0].message.type.name, peer.peer_id.short(), exc)
            else:  # one request must never take the whole DHT down with it
                log.exception("unexpected error in DHT %s to %s", requests[0].message.type.name, peer.peer_id.short())
        for request in requests:
            if request.request_id not in answered:
                self.core.handle_failure(request.request_id, self.now())
        self._pump()

    async def _ask(self, peer_id: PeerId, requests: list[OutboundRequest], on_answer) -> None:
        """Requests and their answers on one stream, reused where one is kept.

        The requests are written back to back and read back in order: a
        server serves a stream's requests one at a time (ours and
        go-libp2p-kad-dht's alike). Servers may end a stream at will (some
        after every answer): the requests left unanswered go on a new stream
        if the old one answered any, or if it was a reused one (once).
        """
        remaining = list(requests)
        retried = False
        while remaining:
            replay_safe = all(r.message.type in REPLAY_SAFE_TYPES for r in remaining)
            pooled = await self._request_streams.take(peer_id, replay_safe)
            answered = 0
            try:
                await pooled.stream.send_all(b"".join(frame(encode_message(r.message)) for r in remaining))
                remote_addr = multiaddr_bytes(pooled.stream.remote_addr)
                while remaining:
                    answer = await pooled.reader.read_frame(MAX_MESSAGE_SIZE)
                    if answer is None:
                        raise _StreamEnded("the peer closed the stream without answering")
                    try:
                        response = decode_message(answer)
                    except DhtProtocolError:
                        self._report_misbehaviour(peer_id, Misbehaviour.MALFORMED)
                        raise
                    on_answer(remaining[0], response, remote_addr)
                    remaining.pop(0)
                    answered += 1
            except BaseException as exc:
                await reset_quietly(pooled.stream)  # the spec: on any error, reset
                ended = isinstance(exc, (_StreamEnded, TransportError, FramingError))
                if ended and (answered or (pooled.reused and not retried)):
                    retried = retried or not answered
                    continue
                raise
            await self._request_streams.give_back(peer_id, pooled, answered)

    async def _tell(self, peer_id: PeerId, requests: list[OutboundRequest], on_answer) -> None:
        """Messages without answers (ADD_PROVIDER), written back to back on a new stream.

        Then we wait for the peer to end its side before closing: closing
        while it still reads would send STOP_SENDING, and some stacks
        (py-libp2p) then drop the messages they have not read yet. Peers that
        echo each ADD_PROVIDER (py-libp2p does) have the echoes read and dropped.
        """
        stream = await self.host.new_stream(peer_id, [PROTOCOL_ID], replay_safe=False)
        try:
            for request in requests:
                await write_frame(stream, encode_message(request.message))
            await stream.send_eof()
            drained = 0
            with trio.move_on_after(ONE_WAY_DRAIN_TIMEOUT):
                while drained <= MAX_MESSAGE_SIZE:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    drained += len(chunk)
        except BaseException:
            await reset_quietly(stream)
            raise
        await close_quietly(stream)
        for request in requests:
            on_answer(request, None, None)

    # ----------------------------------------------------------- inbound

    async def _handle_stream(self, stream) -> None:
        peer = stream.remote_peer
        open_from_peer = self._inbound_per_peer.get(peer, 0)
        if open_from_peer >= MAX_INBOUND_STREAMS_PER_PEER or self._inbound_limit.available_tokens < 1:
            log.debug("too many inbound DHT streams: resetting one from %s", peer.short())
            await stream.reset()
            return
        self._inbound_per_peer[peer] = open_from_peer + 1
        self._inbound_limit.acquire_nowait()
        try:
            await self._serve_stream(stream)
        finally:
            self._inbound_limit.release()
            remaining = self._inbound_per_peer.pop(peer) - 1
            if remaining:
                self._inbound_per_peer[peer] = remaining

    async def _serve_stream(self, stream) -> None:
        peer = stream.remote_peer
        reader = BufferedReader(stream)
        try:
            for _ in range(MAX_REQUESTS_PER_STREAM):
                with trio.move_on_after(INBOUND_IDLE_TIMEOUT):
                    try:
                        data = await reader.read_frame(MAX_MESSAGE_SIZE)
                        if data is None:
                            return
                        request = decode_message(data)
                    except (DhtProtocolError, FramingError):
                        self._report_misbehaviour(peer, Misbehaviour.MALFORMED)
                        raise
                    if in_early_data(stream) and not await self._early_request_may_proceed(stream, request):
                        await stream.reset()
                        return
                    observed = multiaddr_bytes(stream.remote_addr)
                    response = self.core.handle_request(
                        peer,
                        request,
                        self.now(),
                        sender_addrs=self._peer_addrs(peer),
                        observed_addr=observed,
                        # No probe back while the handshake runs: it would dial the peer a second connection.
                        sender_is_server=self._sender_is_server(peer, observed, probe=stream.handshake_confirmed),
                    )
                    self._pump()
                    if response is not None:
                        await write_frame(stream, encode_message(response))
                    continue
                return  # idle for too long
        except (DhtProtocolError, FramingError) as exc:
            log.debug("DHT request from %s rejected: %s", peer.short(), exc)
            self._pump()
            await stream.reset()

    async def _early_request_may_proceed(self, stream, request: KadMessage) -> bool:
        """A request that came in 0-RTT, before the handshake completed.

        0-RTT data can be replayed, so only a read is served at once. A
        write waits for the handshake: once it completes, the peer has
        proved it holds this connection's keys, so the write is no replay.
        If it fails, the write is dropped (False).
        """
        if request.type in REPLAY_SAFE_TYPES:
            self._count_early_request(stream.remote_peer, request.type, "answered")
            return True
        self._count_early_request(stream.remote_peer, request.type, "held")
        confirmed = await stream.wait_for_handshake(EARLY_WRITE_HANDSHAKE_TIMEOUT)
        self._count_early_request(stream.remote_peer, request.type, "applied" if confirmed else "dropped")
        if not confirmed:
            log.debug("DHT %s in 0-RTT from %s dropped: the handshake did not complete",
                      request.type.name, stream.remote_peer.short())
        return confirmed

    def _count_early_request(self, peer: PeerId, kind: MessageType, outcome: str) -> None:
        self.metrics.early_requests.labels(kind.name, outcome).inc()
        for listener in self._early_request_listeners:
            listener(peer, kind, outcome)

    # -------------------------------------------------------- operations

    def _running_core(self) -> KademliaCore:
        if self.core is None:
            raise RuntimeError("the DHT service is not running: start it with nursery.start(service.run)")
        return self.core

    async def _run_operation(self, start: Callable[[KademliaCore, float], int]) -> OperationResult:
        op_id = start(self._running_core(), self.now())
        # setdefault: bootstrap() hands back the running bootstrap's id.
        waiter = self._waiters.setdefault(op_id, _Waiter())
        self._pump()
        await waiter.done.wait()
        return waiter.result

    def routing_table_size(self) -> int:
        return len(self.core.routing) if self.core is not None else 0

    async def wait_for_routing_peers(self, count: int) -> int:
        """Return once the routing table holds at least ``count`` peers."""
        while self.routing_table_size() < count:
            await self._pumped.wait()
        return self.routing_table_size()

    async def find_node(self, key: bytes) -> OperationResult:
        return await self._run_operation(lambda core, now: core.find_node(key, now))

    async def get_providers(self, key: bytes, wanted: int = 20) -> OperationResult:
        return await self._run_operation(lambda core, now: core.get_providers(key, now, wanted))

    async def get_value(self, key: bytes, quorum: int | None = None) -> OperationResult:
        return await self._run_operation(lambda core, now: core.get_value(key, now, quorum))

    async def put_value(self, key: bytes, value: bytes) -> OperationResult:
        return await self._run_operation(lambda core, now: core.put_value(key, value, now))

    async def put_values(self, values: dict[bytes, bytes]) -> OperationResult:
        """Many value records, one lookup per keyspace region; see ``stored_per_key``."""
        return await self._run_operation(lambda core, now: core.put_values(values, now))

    async def bootstrap(self) -> OperationResult:
        return await self._run_operation(lambda core, now: core.bootstrap(now))

    def provide(self, keys: list[bytes]) -> None:
        """Queue provider records; the reprovider publishes them in region batches."""
        self._running_core().provide(keys, self.now())
        self._pump()

    async def wait_provided(self, keys: list[bytes]) -> None:
        """Return once every key has been published at least once (bound it with a timeout)."""
        while True:
            published = self.store.local_provides()
            if all(published.get(key, 0.0) > 0 for key in keys):
                return
            await self._provide_progress.wait()

    def on_record_changed(self, listener: Callable[[bytes], None]) -> None:
        self._record_listeners.append(listener)

    def on_misbehaviour(self, listener: Callable[[PeerId, Misbehaviour], None]) -> None:
        """Call ``listener(peer, kind)`` when a peer sends a malformed message or exceeds a rate limit."""
        self._misbehaviour_listeners.append(listener)

    def on_probe(self, listener: Callable[[PeerId, bool], None]) -> None:
        """Call ``listener(peer, answered)`` when a liveness check of a routing-table peer settles."""
        self._probe_listeners.append(listener)

    def on_early_request(self, listener: Callable[[PeerId, MessageType, str], None]) -> None:
        """Call ``listener(peer, type, outcome)`` for each request that came in
        0-RTT: outcome "answered" (a read), "held" (a write, until the
        handshake completes), then "applied" or "dropped"."""
        self._early_request_listeners.append(listener)

    def _report_misbehaviour(self, peer: PeerId, kind: Misbehaviour) -> None:
        for listener in self._misbehaviour_listeners:
            listener(peer, kind)
