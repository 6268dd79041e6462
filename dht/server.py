"""The server half of the core: answers to the six ``/ipfs/kad/1.0.0`` requests.

Answers come from the routing table and the record store. Requests that
make us store something (ADD_PROVIDER, PUT_VALUE) are rate limited per peer
and per IP prefix, and every value is validated before it is stored.
"""

from __future__ import annotations

import enum
import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

from hypermesh.transport.identity import PeerId

from .keys import CidError, kad_key, provider_key
from .messages import DhtProtocolError, KadMessage, MessageType, PeerInfo, Record
from .metrics import DhtMetrics
from .ratelimit import RateLimit, TokenBuckets
from .records import PutOrigin, RecordError, Validator
from .routing import RoutingTable

log = logging.getLogger(__name__)

# Keys whose admitting prefixes (PutOrigin.admitted) a server remembers; beyond, the
# least recently written is forgotten and its instances fill the room of every home.
MAX_REMEMBERED_ADMISSION_KEYS = 4096


@dataclass(frozen=True, slots=True)
class Requester:
    peer: PeerId
    addrs: tuple[bytes, ...]
    group: str | None  # IP prefix of the address we observed the request from


@dataclass(frozen=True, slots=True)
class RecordChanged:
    """A value record we serve was created or replaced by a PUT_VALUE."""

    key: bytes


class Misbehaviour(enum.Enum):
    """What a peer did wrong, for whoever keeps score (the trust engine)."""

    MALFORMED = "malformed"  # a message that does not decode, or exceeds our bounds
    RATE_LIMITED = "rate_limited"  # a request over the sender's per-peer or per-prefix rate


@dataclass(frozen=True, slots=True)
class PeerMisbehaved:
    peer: PeerId
    kind: Misbehaviour


@dataclass(slots=True)
class CoreStats:
    requests_sent: int = 0
    requests_handled: int = 0
    rate_limited: int = 0
    rejected: int = 0
    # Lookup queries that passed the straggler threshold and were gone around.
    stragglers: int = 0
    operations: dict[str, int] = field(default_factory=dict)


class RequestServer:
    def __init__(self, routing: RoutingTable, store, validator: Validator, config, stats: CoreStats,
                 metrics: DhtMetrics, emit: Callable[[object], None]):
        self.routing = routing
        self.store = store
        self.validator = validator
        self.config = config
        self.stats = stats
        self.metrics = metrics
        self._emit = emit
        self._add_provider_limits = self._limits(config.add_provider_limit)
        self._put_value_limits = self._limits(config.put_value_limit)
        self._admitted: OrderedDict[bytes, dict[PeerId, str | None]] = OrderedDict()
        self._handlers = {
            MessageType.FIND_NODE: self._serve_find_node,
            MessageType.GET_PROVIDERS: self._serve_get_providers,
            MessageType.ADD_PROVIDER: self._serve_add_provider,
            MessageType.GET_VALUE: self._serve_get_value,
            MessageType.PUT_VALUE: self._serve_put_value,
            MessageType.PING: self._serve_ping,
        }

    def _limits(self, per_peer: RateLimit) -> tuple[TokenBuckets, TokenBuckets]:
        scale = self.config.ip_group_rate_multiplier
        return TokenBuckets(per_peer), TokenBuckets(RateLimit(per_peer.rate * scale, per_peer.burst * scale))

    def handle(self, requester: Requester, message: KadMessage, now: float) -> KadMessage | None:
        """The answer to one request (None: nothing to send); DhtProtocolError to reset."""
        self.stats.requests_handled += 1
        self.metrics.requests_handled.labels(message.type.name).inc()
        try:
            return self._handlers[message.type](requester, message, now)
        except DhtProtocolError as exc:
            self.stats.rejected += 1
            self.metrics.requests_rejected.labels(message.type.name, "invalid").inc()
            log.debug("rejected %s from %s: %s", message.type.name, requester.peer.short(), exc)
            raise

    def _closer_peers(self, key: bytes, exclude: PeerId) -> tuple[PeerInfo, ...]:
        entries = self.routing.closest(kad_key(key), self.config.k, exclude=exclude)
        return tuple(e.info for e in entries)

    def _serve_find_node(self, requester, message, now):
        return KadMessage(
            MessageType.FIND_NODE, key=message.key, closer_peers=self._closer_peers(message.key, requester.peer)
        )

    @staticmethod
    def _provider_key(key: bytes) -> bytes:
        try:
            return provider_key(key)
        except CidError as exc:
            raise DhtProtocolError(f"provider key is neither a multihash nor a CID: {exc}") from None

    def _serve_get_providers(self, requester, message, now):
        key = self._provider_key(message.key)
        providers = self.store.get_providers(key, now, self.config.max_providers_returned)
        return KadMessage(
            MessageType.GET_PROVIDERS,
            key=message.key,
            closer_peers=self._closer_peers(key, requester.peer),
            provider_peers=tuple(providers),
        )

    def _rate_limited(self, limits: tuple[TokenBuckets, TokenBuckets], requester: Requester, message: KadMessage, now: float) -> bool:
        """Per-peer buckets, and per-IP-prefix buckets since peer IDs cost nothing to make."""
        per_peer, per_group = limits
        allowed = per_peer.allow(requester.peer, now)
        if allowed and requester.group is not None:
            allowed = per_group.allow(requester.group, now)
        if allowed:
            return False
        self.stats.rate_limited += 1
        self.metrics.requests_rejected.labels(message.type.name, "rate_limited").inc()
        self._emit(PeerMisbehaved(requester.peer, Misbehaviour.RATE_LIMITED))
        return True

    def _serve_add_provider(self, requester, message, now):
        key = self._provider_key(message.key)
        if self._rate_limited(self._add_provider_limits, requester, message, now):
            return None
        for provider in message.provider_peers:
            # The spec lets a peer announce only itself; anything else would let
            # one peer point the network at a victim.
            if provider.peer_id != requester.peer:
                continue
            addrs = provider.addrs or requester.addrs
            expires_at = now + self.config.provider_ttl
            if not self.store.add_provider(key, requester.peer, addrs, expires_at, now):
                self.metrics.requests_rejected.labels(message.type.name, "full").inc()
        return None

    def _serve_get_value(self, requester, message, now):
        value = self.store.get_value(message.key, now)
        record = Record(message.key, value) if value is not None else None
        closer = self._closer_peers(message.key, requester.peer)
        return KadMessage(MessageType.GET_VALUE, key=message.key, record=record, closer_peers=closer)

    def _serve_put_value(self, requester, message, now):
        record = message.record
        if record is None or record.key != message.key:
            raise DhtProtocolError("PUT_VALUE without a record for its key")
        if self._rate_limited(self._put_value_limits, requester, message, now):
            raise DhtProtocolError("PUT_VALUE rate limit exceeded")
        origin = PutOrigin(requester.peer, requester.group, self._admissions(record.key))
        self.store_value(record.key, record.value, now, origin)
        return KadMessage(MessageType.PUT_VALUE, key=message.key, record=Record(record.key, record.value))

    def _admissions(self, key: bytes) -> dict[PeerId, str | None]:
        """The prefix each listed instance under ``key`` was admitted from, as far as we remember."""
        admitted = self._admitted.pop(key, None)
        self._admitted[key] = admitted = {} if admitted is None else admitted
        while len(self._admitted) > MAX_REMEMBERED_ADMISSION_KEYS:
            self._admitted.popitem(last=False)
        return admitted

    def store_value(self, key: bytes, value: bytes, now: float, origin: PutOrigin | None = None) -> None:
        """Merge ``value`` into what we store; ``origin``: the PUT_VALUE's sender (None: our own record)."""
        existing = self.store.get_value(key, now)
        try:
            merged = self.validator.merge(key, existing, value, now, origin)
        except RecordError as exc:
            raise DhtProtocolError(f"record rejected: {exc}") from None
        if merged == existing:
            return
        if not self.store.put_value(key, merged, self.validator.expires_at(key, merged, now), now):
            raise DhtProtocolError("value store is full")
        self._emit(RecordChanged(key))

    def _serve_ping(self, requester, message, now):
        return KadMessage(MessageType.PING)
