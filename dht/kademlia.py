"""The Kademlia DHT core: a sans-IO state machine (in the style of h11).

:class:`KademliaCore` is fed inbound requests, responses, failures and the
current time; it returns responses, queues outbound requests
(:meth:`take_outbound`) and events (:meth:`take_events`), and says when it
wants to be woken (:meth:`get_timer` / :meth:`handle_timer`). It never does
I/O and never reads a clock, so the same code runs in the trio driver
(driver.py) and in the deterministic simulator (sim.py).

Server mode answers the six ``/ipfs/kad/1.0.0`` requests; client mode only
asks (the driver then registers no handler, so the host does not advertise
the protocol and peers keep us out of their routing tables, as the spec
requires for nodes that are not publicly reachable).
"""

from __future__ import annotations

import enum
import heapq
import itertools
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from hypermesh.transport.identity import PeerId

from .keys import (
    KEY_BITS,
    MAX_REFRESH_COMMON_PREFIX,
    CidError,
    grind_key_in_bucket,
    kad_key,
    peer_key,
    validate_multihash,
)
from .lookup import Lookup, LookupConfig, StragglerThreshold
from .messages import DhtProtocolError, KadMessage, MessageType, PeerInfo
from .metrics import DhtMetrics
from .operations import (
    GetProvidersOperation,
    GetValueOperation,
    Operation,
    OperationResult,
    Phase,
    ProvideBatchOperation,
    PutValueBatchOperation,
    PutValueOperation,
)
from .ratelimit import RateLimit
from .records import NamespacedValidator, RecordError, Validator
from .reprovide import ProvideBatch, Reprovider, Send, Settled, group_by_region
from .routing import ObserveResult, RoutingConfig, RoutingTable, ip_group
from .server import CoreStats, RecordChanged, Requester, RequestServer  # noqa: F401 (RecordChanged is re-exported for the driver)

log = logging.getLogger(__name__)


FIRST_SWEEP_DELAY = 30.0


class Mode(enum.Enum):
    SERVER = "server"
    CLIENT = "client"


@dataclass(frozen=True, slots=True)
class KadConfig:
    k: int = 20
    alpha: int = 3
    query_timeout: float = 10.0
    # A lookup query unanswered after the node's retransmission-style timeout
    # (lookup.StragglerThreshold), never less than this, stops holding up its
    # lookup: one paused or overloaded peer among the closest would otherwise
    # set every lookup through it to its pace.
    straggler_floor: float = 0.025
    # A lookup that has not converged by then ends with what it has.
    operation_timeout: float = 60.0
    # S/Kademlia disjoint paths for provider and value lookups (1 = off).
    disjoint_paths: int = 1
    # A provider lookup that has found providers ends once this many of the
    # closest peers have answered, as go-libp2p-kad-dht's does (its
    # resiliency, β = 3): each of the k closest holds the record, and waiting
    # for the farthest of them cost a read ~7 round trips at alpha = 3 and its
    # slowest straggler. One that has found none asks all k closest (hostile
    # peers hiding a record must not end it); a value lookup always does.
    provider_lookup_settle_on: int = 3
    # Peers a provide or put batch's lookup collects around its region (> k,
    # see operations.RegionBatchOperation).
    provide_lookup_size: int = 64
    put_lookup_size: int = 40
    # Fan-out requests that await an answer (PUT_VALUE) in flight per
    # operation. A batched put has thousands; sent at once they would wait
    # behind the driver's stream limit until their query timeouts expired.
    max_fanout_in_flight: int = 32
    get_value_quorum: int = 3
    max_providers_returned: int = 20
    # go-libp2p-kad-dht's values: records live 48 h and are republished every 22 h.
    provider_ttl: float = 48 * 3600.0
    republish_interval: float = 22 * 3600.0
    max_parallel_provide_batches: int = 4
    # After a region's ADD_PROVIDERs, GET_PROVIDERS to this many of the peers
    # sent the most: only a confirmed region counts as published. 0 trusts
    # every send, as kubo does (the simulator's baseline).
    provide_confirm_probes: int = 6
    # A provided key never confirmed published counts as overdue after this.
    first_publish_grace: float = 3600.0
    unconfirmed_retry_delay: float = 600.0
    maintenance_interval: float = 60.0
    refresh_interval: float = 600.0
    max_parallel_refreshes: int = 3
    liveness_max_age: float = 3600.0
    liveness_checks_per_tick: int = 8
    bootstrap_retry_min: float = 5.0
    bootstrap_retry_max: float = 300.0
    save_peers_interval: float = 600.0
    garbage_collect_interval: float = 3600.0
    overdue_check_interval: float = 600.0
    # Per peer: a reprovide sweep sends a peer a few hundred records at once.
    add_provider_limit: RateLimit = RateLimit(rate=20.0, burst=400.0)
    # A batched registration (or renewal) of N services in an M-node network
    # sends each peer about N*k/M PUT_VALUEs at once: 100 covers N = 5 M.
    put_value_limit: RateLimit = RateLimit(rate=1.0, burst=100.0)
    # All peers behind one /24 (/48) share a bucket this many times larger:
    # new peer IDs are free, new IP prefixes are not.
    ip_group_rate_multiplier: float = 4.0
    routing: RoutingConfig = RoutingConfig()
    exempt_private_addresses: bool = True


@dataclass(frozen=True, slots=True)
class OutboundRequest:
    request_id: int
    peer: PeerInfo
    message: KadMessage
    # ADD_PROVIDER has no response: the driver reports success once it is sent.
    expects_response: bool


@dataclass(frozen=True, slots=True)
class OperationFinished:
    result: OperationResult


@dataclass(frozen=True, slots=True)
class PeerProbed:
    """A liveness check of a routing-table peer settled: it answered, or it failed or timed out."""

    peer: PeerId
    answered: bool


class _Purpose(enum.Enum):
    LOOKUP = 1
    FANOUT = 2
    LIVENESS = 3
    # The best record sent to a peer that answered GET_VALUE with a stale one,
    # after the operation has ended.
    REPAIR = 4
    PUBLISH = 5  # a paced ADD_PROVIDER (op_id: its publication)
    CONFIRM = 6  # a GET_PROVIDERS probe of a publication


@dataclass(slots=True)
class _Pending:
    peer: PeerId
    purpose: _Purpose
    op_id: int | None
    request_type: MessageType
    key: bytes
    expects_response: bool
    # PUBLISH and CONFIRM requests: what the reprovider asked for.
    send: Send | None = None
    sent_at: float = 0.0


@dataclass(slots=True)
class _PutBatch:
    """A batched put (KademliaCore.put_values) until its last operation ends."""

    values: dict[bytes, bytes]
    # Operations still running, plus one while put_values is starting them.
    pending: int = 1
    stored: dict[bytes, int] = field(default_factory=dict)
    queries: int = 0
    messages: int = 0
    timed_out: bool = False


_REQUEST_TIMEOUT = 0
_OPERATION_TIMEOUT = 1
_REQUEST_SLOW = 2  # a lookup query past the straggler threshold


class KademliaCore:
    def __init__(
        self,
        local_peer: PeerId,
        *,
        store,
        now: float,
        rng: random.Random,
        config: KadConfig = KadConfig(),
        mode: Mode = Mode.SERVER,
        validator: Validator | None = None,
        local_addrs: tuple[bytes, ...] = (),
        metrics: DhtMetrics | None = None,
    ):
        self.local_peer = local_peer
        self.metrics = metrics or DhtMetrics()
        self.local_key = peer_key(local_peer)
        self.local_addrs = local_addrs
        self.store = store
        self.rng = rng
        self.config = config
        self.mode = mode
        self.validator = validator or NamespacedValidator()
        self.routing = RoutingTable(self.local_key, config.routing)
        # True for peers to keep out of the routing table (the trust layer's shun list).
        self.peer_filter: Callable[[PeerId], bool] | None = None
        self.reprovider = Reprovider(
            store,
            k=config.k,
            republish_interval=config.republish_interval,
            record_ttl=config.provider_ttl,
            add_provider_limit=config.add_provider_limit,
            metrics=self.metrics,
            max_parallel_batches=config.max_parallel_provide_batches,
            confirm_probes=config.provide_confirm_probes,
            first_publish_grace=config.first_publish_grace,
            unconfirmed_retry_delay=config.unconfirmed_retry_delay,
        )
        self.stats = CoreStats()
        self._events: list = []
        self.server = RequestServer(
            self.routing, store, self.validator, config, self.stats, self.metrics, self._events.append
        )
        self._ids = itertools.count(1)
        self._outbound: list[OutboundRequest] = []
        self._requests: dict[int, _Pending] = {}
        self._deadlines: list[tuple[float, int, int]] = []
        self.straggler_threshold = StragglerThreshold(config.straggler_floor, config.query_timeout)
        self._ops: dict[int, Operation] = {}
        self._batches: dict[int, ProvideBatch] = {}
        # Provide lookups that have ended, until their publication settles.
        self._provide_results: dict[int, OperationResult] = {}
        self._put_batches: dict[int, _PutBatch] = {}
        self._refresh_ops: set[int] = set()
        self._liveness_checks: set[PeerId] = set()
        self._bootstrap_peers: dict[PeerId, PeerInfo] = {}
        self._bootstrap_op: int | None = None
        self._bootstrap_backoff = config.bootstrap_retry_min
        self._next_bootstrap = now
        self._next_maintenance = now
        # The driver bootstraps at start; the periodic self-lookup follows from then on.
        self._next_refresh = now + config.refresh_interval
        self._next_save = now + config.save_peers_interval
        self._next_gc = now + config.garbage_collect_interval
        self._next_overdue_check = now + config.overdue_check_interval
        for info in store.load_peers():
            self._bootstrap_peers.setdefault(info.peer_id, info)
        # Keys provided before a restart are republished when due; give the
        # bootstrap a head start so the first sweep has peers to publish to.
        self.reprovider.schedule(now + FIRST_SWEEP_DELAY)

    # ----------------------------------------------------------- driver I/O

    def take_outbound(self) -> list[OutboundRequest]:
        outbound, self._outbound = self._outbound, []
        return outbound

    def take_events(self) -> list:
        # Cleared in place: the request server holds this list's append.
        events = list(self._events)
        self._events.clear()
        return events

    def get_timer(self) -> float:
        while self._deadlines and not self._deadline_live(self._deadlines[0]):
            heapq.heappop(self._deadlines)
        timer = self._next_maintenance
        if self._deadlines:
            timer = min(timer, self._deadlines[0][0])
        sweep = self.reprovider.get_timer()
        if sweep is not None:
            timer = min(timer, sweep)
        return timer

    def _deadline_live(self, entry: tuple[float, int, int]) -> bool:
        _, kind, ident = entry
        return ident in (self._ops if kind == _OPERATION_TIMEOUT else self._requests)

    def handle_timer(self, now: float) -> None:
        while self._deadlines and self._deadlines[0][0] <= now:
            _, kind, ident = heapq.heappop(self._deadlines)
            if kind == _REQUEST_TIMEOUT and ident in self._requests:
                self.handle_failure(ident, now)
            elif kind == _OPERATION_TIMEOUT and ident in self._ops:
                self._operation_timed_out(self._ops[ident], now)
            elif kind == _REQUEST_SLOW and ident in self._requests:
                self._query_slow(self._requests[ident], now)
        if self.reprovider.sweep_due(now):
            if len(self.routing):
                self.reprovider.plan(now, self.network_size_estimate())
                self._start_provide_batches(now)
            else:  # nobody to publish to yet: every batch would come back unplaced
                self.reprovider.postpone(now + FIRST_SWEEP_DELAY)
        self._publish(now)
        if now >= self._next_maintenance:
            self._next_maintenance = now + self.config.maintenance_interval
            self._maintain(now)

    def set_local_addrs(self, addrs: tuple[bytes, ...]) -> None:
        self.local_addrs = tuple(addrs)

    def add_bootstrap_peers(self, peers: list[PeerInfo]) -> None:
        for info in peers:
            if info.peer_id != self.local_peer:
                self._bootstrap_peers[info.peer_id] = info

    def peer_seen(self, peer: PeerId, addrs: tuple[bytes, ...], now: float, observed_addr: bytes | None) -> None:
        """A connected peer advertises the DHT protocol (learned through identify).

        ``observed_addr`` is where our connection to it comes from: its IP
        prefix, never that of an address the peer advertises, is what the
        table's per-prefix caps count (a sybil would advertise a private or
        borrowed address to escape them). Without one (the connection is
        gone) the peer is not added.
        """
        if peer != self.local_peer and observed_addr is not None:
            self._observe_server(peer, addrs, observed_addr, now, may_check=False)

    def probe(self, peer: PeerId, addrs: tuple[bytes, ...], now: float) -> None:
        """Ask ``peer`` a FIND_NODE: if it answers, it serves the DHT and joins our table.

        For peers that query us before identify has told us their protocols.
        """
        if peer != self.local_peer and peer not in self.routing:
            self._check_liveness(peer, addrs, now)

    @property
    def local_info(self) -> PeerInfo:
        return PeerInfo(self.local_peer, self.local_addrs)

    # --------------------------------------------------------- server side

    def handle_request(
        self,
        sender: PeerId,
        message: KadMessage,
        now: float,
        *,
        sender_addrs: tuple[bytes, ...] = (),
        observed_addr: bytes | str | None = None,
        sender_is_server: bool = False,
    ) -> KadMessage | None:
        """Answer one inbound request; None means send nothing back.

        Raises :class:`DhtProtocolError` for a request that breaks the
        protocol; the driver then resets the stream.
        """
        if self.mode is Mode.CLIENT:
            raise DhtProtocolError("this node is a DHT client and serves no requests")
        if sender_is_server and sender != self.local_peer:
            # No liveness checks on inbound contacts: a check is itself an
            # inbound contact for its target, so that would chain across the network.
            self._observe_server(sender, sender_addrs, observed_addr, now, may_check=False)
        group = ip_group(observed_addr, exempt_private=self.config.exempt_private_addresses)
        return self.server.handle(Requester(sender, sender_addrs, group), message, now)

    # --------------------------------------------------------- client side

    def handle_response(
        self, request_id: int, message: KadMessage | None, now: float, remote_addr: bytes | str | None = None
    ) -> None:
        """A response (or, for ADD_PROVIDER, None once it was sent) arrived."""
        pending = self._requests.pop(request_id, None)
        if pending is None:
            return
        if message is not None and message.type != pending.request_type:
            self._requests[request_id] = pending
            self.handle_failure(request_id, now)
            return
        if message is not None:
            self._observe_server(pending.peer, (), remote_addr, now)
            self.straggler_threshold.observe(now - pending.sent_at)
        if pending.send is not None:
            self._publication_answer(pending, message, now)
            return
        op = self._operation_of(pending, True)
        if op is None:
            return
        if pending.purpose is _Purpose.FANOUT:
            self._fanout_settled(op, pending, message is not None or not pending.expects_response, now)
        elif op.phase is Phase.LOOKUP and message is not None:
            closer = [
                (info, peer_key(info.peer_id))
                for info in message.closer_peers[: self.config.k]
                if info.peer_id != self.local_peer
            ]
            if op.lookup.on_response(pending.peer, closer, now):
                op.on_answer(op.lookup.candidate(pending.peer), message, now)
        self._advance(op, now)

    def is_awaiting(self, request_id: int) -> bool:
        """Whether the request is still wanted (not answered, failed or timed out)."""
        return request_id in self._requests

    def handle_failure(self, request_id: int, now: float) -> None:
        """A request failed: the peer could not be reached, reset, or timed out."""
        pending = self._requests.pop(request_id, None)
        if pending is None:
            return
        if pending.purpose is not _Purpose.REPAIR:
            # A peer may refuse a repair by its own rules (a full service set,
            # entries it admits only from their owners): no sign it is gone.
            self.routing.record_failure(pending.peer)
        if not len(self.routing):
            self._next_maintenance = now  # lost every peer: re-bootstrap at once
        if pending.send is not None:
            self._publication_answer(pending, None, now)
            return
        op = self._operation_of(pending, False)
        if op is None:
            return
        if pending.purpose is _Purpose.FANOUT:
            self._fanout_settled(op, pending, False, now)
        else:
            op.lookup.on_failure(pending.peer, now)
        self._advance(op, now)

    def _operation_of(self, pending: _Pending, answered: bool) -> Operation | None:
        """The live operation a settled request belonged to; ends liveness checks (and reports them)."""
        if pending.purpose is _Purpose.LIVENESS:
            self._liveness_checks.discard(pending.peer)
            self._events.append(PeerProbed(pending.peer, answered))
        if pending.op_id is None:  # liveness checks and repairs belong to none
            return None
        return self._ops.get(pending.op_id)

    def _query_slow(self, pending: _Pending, now: float) -> None:
        op = self._ops.get(pending.op_id)  # only lookup queries get a straggler deadline (_send)
        if op is not None and op.phase is Phase.LOOKUP and op.lookup.mark_slow(pending.peer):
            self.stats.stragglers += 1
            self.metrics.lookup_stragglers.inc()
            self._advance(op, now)

    def exclude_peer(self, peer: PeerId) -> bool:
        """Drop ``peer`` from the routing table now (``peer_filter`` keeps it out later).

        Returns whether it was there.
        """
        present = peer in self.routing
        self.routing.remove(peer)
        return present

    def _observe_server(
        self, peer: PeerId, addrs: tuple[bytes, ...], observed: bytes | str | None, now: float, may_check: bool = True
    ) -> None:
        if self.peer_filter is not None and self.peer_filter(peer):
            return
        if observed is not None and not addrs:
            addrs = (observed,) if isinstance(observed, bytes) else ()
        group = ip_group(observed, exempt_private=self.config.exempt_private_addresses)
        outcome, stalest = self.routing.observe(peer, peer_key(peer), addrs, now, group)
        if outcome is ObserveResult.PENDING and stalest is not None and may_check:
            self._check_liveness(stalest.peer_id, stalest.addrs, now)

    def _check_liveness(self, peer: PeerId, addrs: tuple[bytes, ...], now: float) -> None:
        if peer in self._liveness_checks:
            return
        self._liveness_checks.add(peer)
        # FIND_NODE for ourselves rather than the deprecated PING: every
        # implementation answers it, and the answer may teach us neighbours.
        message = KadMessage(MessageType.FIND_NODE, key=self.local_peer.multihash)
        self._send(PeerInfo(peer, addrs), message, now, _Purpose.LIVENESS, None, True)

    def _send(self, peer: PeerInfo, message: KadMessage, now: float, purpose: _Purpose, op_id, expects_response: bool,
              send: Send | None = None) -> None:
        request_id = next(self._ids)
        self._requests[request_id] = _Pending(
            peer.peer_id, purpose, op_id, message.type, message.key, expects_response, send, now
        )
        heapq.heappush(self._deadlines, (now + self.config.query_timeout, _REQUEST_TIMEOUT, request_id))
        if purpose is _Purpose.LOOKUP:
            heapq.heappush(self._deadlines, (now + self.straggler_threshold.seconds, _REQUEST_SLOW, request_id))
        self._outbound.append(OutboundRequest(request_id, peer, message, expects_response))
        self.stats.requests_sent += 1

    # ---------------------------------------------------------- operations

    def _start(self, op_class, key: bytes, now: float, *, target: int | None = None, paths: int = 1,
               result_size: int | None = None, extra_seeds=(), **kwargs) -> int:
        target = kad_key(key) if target is None else target
        self.routing.mark_refreshed(target, now)
        seeds = [(e.info, e.key) for e in self.routing.closest(target, self.config.k)]
        known = {info.peer_id for info, _ in seeds}
        seeds += [(info, peer_key(info.peer_id)) for info in extra_seeds if info.peer_id not in known]
        result_size = result_size or self.config.k
        lookup_config = LookupConfig(
            # A lookup hears from every peer it collects: one collecting more
            # than k asks as many times more at once, or it would take that
            # many times the round trips (64 peers: over 20 at alpha = 3).
            alpha=self.config.alpha * math.ceil(result_size / self.config.k),
            result_size=result_size,
            query_timeout=self.config.query_timeout,
            paths=paths,
        )
        op_id = next(self._ids)
        lookup = Lookup(target, seeds, lookup_config, self.local_peer)
        op = op_class(op_id, key, lookup, now + self.config.operation_timeout, **kwargs)
        self._ops[op_id] = op
        self.stats.operations[op.kind] = self.stats.operations.get(op.kind, 0) + 1
        heapq.heappush(self._deadlines, (op.deadline, _OPERATION_TIMEOUT, op_id))
        self._advance(op, now)
        return op_id

    def _advance(self, op: Operation, now: float) -> None:
        if op.phase is Phase.LOOKUP:
            if not op.lookup.done and op.wants_more():
                for info in op.lookup.next_queries(now):
                    self._send(info, op.query_message(), now, _Purpose.LOOKUP, op.op_id, True)
            if op.lookup.done or not op.wants_more():
                op.lookup.finish()
                self._begin_fanout(op, now)
        if op.phase is Phase.FANOUT and op.fanout_pending <= 0:
            self._finish(op, now)

    def _begin_fanout(self, op: Operation, now: float) -> None:
        op.phase = Phase.FANOUT
        messages = op.fanout(self.local_info)
        op.fanout_pending = len(messages)
        for peer, message, expects_response in messages:
            if expects_response:
                op.fanout_queue.append((peer, message))
            else:  # one-way (ADD_PROVIDER): the driver packs a peer's onto one stream
                op.fanout_sent += 1
                self._send(peer, message, now, _Purpose.FANOUT, op.op_id, False)
        self._send_queued_fanout(op, now)

    def _send_queued_fanout(self, op: Operation, now: float) -> None:
        while op.fanout_queue and op.fanout_in_flight < self.config.max_fanout_in_flight:
            peer, message = op.fanout_queue.popleft()
            op.fanout_in_flight += 1
            op.fanout_sent += 1
            self._send(peer, message, now, _Purpose.FANOUT, op.op_id, True)

    def _fanout_settled(self, op: Operation, pending: _Pending, ok: bool, now: float) -> None:
        op.on_fanout_answer(ok, pending.key)
        if pending.expects_response:
            op.fanout_in_flight -= 1
            self._send_queued_fanout(op, now)

    def _operation_timed_out(self, op: Operation, now: float) -> None:
        op.timed_out = True
        op.lookup.finish()
        if op.phase is Phase.LOOKUP:
            self._begin_fanout(op, now)
        else:
            op.fanout_queue.clear()
            op.fanout_pending = 0
        self._advance(op, now)

    def _finish(self, op: Operation, now: float) -> None:
        op.phase = Phase.DONE
        del self._ops[op.op_id]
        self._refresh_ops.discard(op.op_id)
        if op.op_id == self._bootstrap_op:
            self._bootstrap_finished(now, None if op.timed_out else op.lookup)
        batch = self._batches.pop(op.op_id, None)
        if batch is not None:
            # Reported once its records are confirmed or not (_publish), not now.
            self._provide_results[op.op_id] = op.result()
            self._store_own_provider_records(op.placed_keys(), now)
            self.reprovider.lookup_done(op.op_id, batch, op.assignments, op.unplaced, now)
            self._publish(now)
            return
        result = op.result()
        if isinstance(op, GetValueOperation):
            repairs = op.repairs()
            for peer, message in repairs:
                self._send(peer, message, now, _Purpose.REPAIR, None, True)
            result.repaired = len(repairs)
            result.messages += len(repairs)
        self._events.append(OperationFinished(result))
        if isinstance(op, (PutValueOperation, PutValueBatchOperation)) and op.batch_id is not None:
            self._put_batch_part_done(op.batch_id, op, now)

    def find_node(self, key: bytes, now: float) -> int:
        """Find the k closest peers to ``key`` (a peer ID's bytes, or any key)."""
        return self._start(Operation, key, now)

    def get_providers(self, key: bytes, now: float, wanted: int = 20, paths: int | None = None) -> int:
        """Find up to ``wanted`` providers of a multihash (CID.multihash), over ``paths`` disjoint
        lookup paths (default: the configured ``disjoint_paths``)."""
        if paths is not None and paths < 1:
            raise ValueError(f"a lookup needs at least one path, not {paths}")
        known = self.store.get_providers(key, now, wanted)
        return self._start(
            GetProvidersOperation, key, now, paths=paths or self.config.disjoint_paths, wanted=wanted, known=known,
            settle_on=self.config.provider_lookup_settle_on,
        )

    def get_value(self, key: bytes, now: float, quorum: int | None = None) -> int:
        return self._start(
            GetValueOperation,
            key,
            now,
            paths=self.config.disjoint_paths,
            quorum=quorum or self.config.get_value_quorum,
            validator=self.validator,
            local=self.store.get_value(key, now),
        )

    def put_value(self, key: bytes, value: bytes, now: float) -> int:
        """Validate and store ``value`` locally, then at the k closest peers."""
        self._store_own_values({key: value}, now)
        return self._start(PutValueOperation, key, now, value=value)

    def _store_own_values(self, values: dict[bytes, bytes], now: float) -> None:
        """Validate every record (refusing all if one is invalid), then store them here."""
        for key, value in values.items():
            try:
                self.validator.validate(key, value, now)
            except RecordError as exc:
                raise DhtProtocolError(f"refusing to publish an invalid record for {key!r}: {exc}") from None
        for key, value in values.items():
            self.server.store_value(key, value, now)

    def put_values(self, values: dict[bytes, bytes], now: float) -> int:
        """Store many value records with one lookup per keyspace region, not one per key.

        Like :meth:`put_value` for each key (validated and stored locally
        first; an invalid record refuses the whole batch before anything is
        sent). Returns an id; the :class:`OperationFinished` event with that
        ``op_id`` (kind ``put_values``) says in ``stored_per_key`` how many
        peers stored each key.
        """
        self._store_own_values(values, now)
        batch_id = next(self._ids)
        batch = self._put_batches[batch_id] = _PutBatch(dict(values))
        for lookup_key, keys in group_by_region(list(batch.values), self.network_size_estimate(), self.config.k):
            batch.pending += 1
            self._start(
                PutValueBatchOperation,
                lookup_key,
                now,
                result_size=self._region_lookup_size(keys, self.config.put_lookup_size),
                keys=list(keys),
                k=self.config.k,
                values=batch.values,
                batch_id=batch_id,
            )
        self._put_batch_part_done(batch_id, None, now)
        return batch_id

    def _put_batch_part_done(self, batch_id: int, op: Operation | None, now: float) -> None:
        """One operation of a batched put ended (None: all have been started)."""
        batch = self._put_batches[batch_id]
        if op is not None:
            batch.stored.update(op.stored_per_key())
            batch.queries += op.lookup.queries_sent
            batch.messages += op.lookup.queries_sent + op.fanout_sent
            batch.timed_out |= op.timed_out
            if isinstance(op, PutValueBatchOperation):
                # Keys the region lookup could not place get a lookup of their own.
                for key in op.unplaced:
                    batch.pending += 1
                    self._start(PutValueOperation, key, now, value=batch.values[key], batch_id=batch_id)
        batch.pending -= 1
        if batch.pending:
            return
        del self._put_batches[batch_id]
        stored = {key: batch.stored.get(key, 0) for key in batch.values}
        self._events.append(
            OperationFinished(
                OperationResult(
                    op_id=batch_id,
                    kind="put_values",
                    key=b"",
                    queries=batch.queries,
                    messages=batch.messages,
                    stored=sum(stored.values()),
                    stored_per_key=stored,
                    timed_out=batch.timed_out,
                )
            )
        )

    def provide(self, keys: list[bytes], now: float) -> None:
        """Announce us as a provider of each multihash, now and every republish interval."""
        for key in keys:
            try:
                validate_multihash(key)
            except CidError as exc:
                raise DhtProtocolError(f"provide() takes multihashes (Cid.multihash): {exc}") from None
        self._store_own_provider_records(keys, now)
        self.reprovider.add(keys, now)

    def _store_own_provider_records(self, keys: list[bytes], now: float) -> None:
        # Lookups never query ourselves, so our own store gets our record directly
        # (and again at every republish, or it would expire here first).
        for key in keys:
            self.store.add_provider(key, self.local_peer, self.local_addrs, now + self.config.provider_ttl, now)

    def stop_providing(self, key: bytes) -> None:
        """Stop republishing ``key``; the records at other peers expire on their own."""
        self.reprovider.remove(key)

    def _start_provide_batches(self, now: float) -> None:
        for batch in self.reprovider.take_batches():
            op_id = self._start(
                ProvideBatchOperation,
                batch.lookup_key,
                now,
                result_size=self._region_lookup_size(batch.keys, self.config.provide_lookup_size),
                keys=list(batch.keys),
                k=self.config.k,
            )
            if op_id in self._ops:
                self._batches[op_id] = batch
            else:  # finished at once (no peers at all): nothing was placed
                self.reprovider.lookup_done(op_id, batch, [], list(batch.keys), now)

    def _region_lookup_size(self, keys, wide: int) -> int:
        """Peers a region batch's lookup collects: ``wide`` to place many keys
        at once; for a lone key (the lookup's own target) at most 2k.

        More than k all the same: hostile peers among a key's closest may
        answer without the closer honest ones. Simulated, half of 300 nodes
        hostile: with k, 10 of 360 records could not be found (3 paths);
        with 2k or 64, none. 64 cost half as many queries again, and
        connections that keepalives then pay for.
        """
        return wide if len(keys) > 1 else min(wide, 2 * self.config.k)

    def _publish(self, now: float) -> None:
        """Send the ADD_PROVIDERs the pacer releases and the probes that are due; report ended publications."""
        provider = (self.local_info,)
        for send in self.reprovider.take_sends(now):
            message = KadMessage(MessageType.ADD_PROVIDER, key=send.key, provider_peers=provider)
            self._send(send.peer, message, now, _Purpose.PUBLISH, send.publication, False, send)
        for probe in self.reprovider.take_probes(now):
            message = KadMessage(MessageType.GET_PROVIDERS, key=probe.key)
            self._send(probe.peer, message, now, _Purpose.CONFIRM, probe.publication, True, probe)
        settled = self.reprovider.take_settled()
        for outcome in settled:
            self._publication_settled(outcome)
        if settled:
            self._start_provide_batches(now)

    def _publication_answer(self, pending: _Pending, message: KadMessage | None, now: float) -> None:
        if pending.purpose is _Purpose.PUBLISH:
            self.reprovider.send_settled(pending.send, now)
        else:
            providers = [p.peer_id for p in message.provider_peers] if message is not None else None
            self.reprovider.probe_answered(
                pending.send, providers, self.config.max_providers_returned, self.local_peer, now
            )
        self._publish(now)

    def _publication_settled(self, outcome: Settled) -> None:
        result = self._provide_results.pop(outcome.publication, None)
        if result is not None:
            result.stored = len(outcome.confirmed)
            result.unconfirmed_keys = list(outcome.unconfirmed)
            self._events.append(OperationFinished(result))

    def bootstrap(self, now: float) -> int:
        """Look ourselves up through our table, the bootstrap peers and saved peers."""
        if self._bootstrap_op is not None:
            return self._bootstrap_op
        op_id = self._start(Operation, self.local_peer.multihash, now, extra_seeds=list(self._bootstrap_peers.values()))
        if op_id in self._ops:
            self._bootstrap_op = op_id
        else:  # nobody to ask at all
            self._bootstrap_finished(now)
        return op_id

    def _bootstrap_finished(self, now: float, lookup: Lookup | None = None) -> None:
        """``lookup``: the bootstrap's, if it ran to its end (not cut short by the operation timeout)."""
        self._bootstrap_op = None
        if lookup is not None:
            self._self_lookup_covered(lookup, now)
        if len(self.routing):
            self._bootstrap_backoff = self.config.bootstrap_retry_min
            return
        self._next_bootstrap = now + self._bootstrap_backoff
        log.warning("DHT bootstrap found no peers; retrying in %.0f s", self._bootstrap_backoff)
        self._bootstrap_backoff = min(self._bootstrap_backoff * 2, self.config.bootstrap_retry_max)

    def _self_lookup_covered(self, lookup: Lookup, now: float) -> None:
        """A lookup of our own key has heard from every peer nearer than its
        k-th closest (all there are, if it found fewer): Kademlia's join then
        refreshes the buckets beyond, and those inside need no lookup."""
        if lookup.target != self.local_key:
            return
        answered = lookup.closest_succeeded(self.config.k)
        if answered:
            radius = answered[-1].distance if len(answered) >= self.config.k else 1 << KEY_BITS
            self.routing.mark_covered(radius, now)

    def network_size_estimate(self) -> int:
        """Peers in the network, from how densely our closest neighbours pack.

        The i-th closest of N random keys lies at about i * 2**256 / N, so
        each neighbour gives an estimate; their mean is good to tens of percent.
        """
        closest = self.routing.closest(self.local_key, self.config.k)
        if len(closest) < self.config.k:
            return len(closest) + 1
        estimates = [(i + 1) * (1 << KEY_BITS) / max(1, e.key ^ self.local_key) for i, e in enumerate(closest)]
        return max(1, int(sum(estimates) / len(estimates)))

    # --------------------------------------------------------- maintenance

    def _maintain(self, now: float) -> None:
        self.metrics.routing_table_peers.set(len(self.routing))
        if not len(self.routing) and self._bootstrap_op is None and now >= self._next_bootstrap:
            if self._bootstrap_peers:
                self.bootstrap(now)
        if now >= self._next_refresh and len(self.routing):
            self._next_refresh = now + self.config.refresh_interval
            self.bootstrap(now)  # the self-lookup keeps our own neighbourhood fresh
        self._refresh_buckets(now)
        for entry in self.routing.stale_entries(now, self.config.liveness_max_age)[: self.config.liveness_checks_per_tick]:
            self._check_liveness(entry.peer_id, entry.addrs, now)
        if now >= self._next_save:
            self._next_save = now + self.config.save_peers_interval
            closest = self.routing.closest(self.local_key, self.store.limits.max_saved_peers)
            if closest:
                self.store.save_peers([e.info for e in closest])
        if now >= self._next_gc:
            self._next_gc = now + self.config.garbage_collect_interval
            self.store.collect_garbage(now)
        if now >= self._next_overdue_check:
            self._next_overdue_check = now + self.config.overdue_check_interval
            self.reprovider.report_overdue(now)

    def _refresh_buckets(self, now: float) -> None:
        slots = self.config.max_parallel_refreshes - len(self._refresh_ops)
        if slots <= 0:
            return
        lowest_refreshable = KEY_BITS - 1 - MAX_REFRESH_COMMON_PREFIX
        for index in self.routing.buckets_to_refresh(now, self.config.refresh_interval):
            if index < lowest_refreshable or slots <= 0:
                continue
            key = grind_key_in_bucket(self.local_key, index, self.rng)
            if key is None:
                continue
            op_id = self.find_node(key, now)
            if op_id in self._ops:
                self._refresh_ops.add(op_id)
            slots -= 1
