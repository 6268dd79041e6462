"""The DHT's client operations: a lookup phase, then an optional fan-out phase.

Each operation owns a :class:`~hypermesh.dht.lookup.Lookup` and decides what
to ask each peer, what to make of the answers, when it has enough, and what
to send once the closest peers are known (PUT_VALUE, ADD_PROVIDER). The core
(kademlia.py) moves messages between operations and the network.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, field

from hypermesh.transport.identity import PeerId

from .keys import kad_key
from .lookup import Candidate, Lookup
from .messages import KadMessage, MessageType, PeerInfo, Record
from .records import RecordError, Validator


class Phase(enum.Enum):
    LOOKUP = 1
    FANOUT = 2
    DONE = 3


@dataclass(slots=True)
class OperationResult:
    op_id: int
    kind: str
    key: bytes
    closest: list[PeerInfo] = field(default_factory=list)
    providers: list[PeerInfo] = field(default_factory=list)
    value: bytes | None = None
    # GET_VALUE: valid records received, and PUT_VALUEs of the best one sent
    # to peers that answered an invalid or outdated record.
    values_received: int = 0
    repaired: int = 0
    # Round trips from our table to the peer that gave the answer (the
    # closest peer for FIND_NODE, the first provider/value otherwise).
    hops: int = 0
    queries: int = 0
    # Everything this operation sent: lookup queries plus fan-out messages.
    messages: int = 0
    stored: int = 0
    # Provide batches: keys whose closest peers this lookup could not pin down,
    # and keys sent but not confirmed by the peers' answers to probes.
    unplaced_keys: list[bytes] = field(default_factory=list)
    unconfirmed_keys: list[bytes] = field(default_factory=list)
    # Batched puts: how many peers stored each key.
    stored_per_key: dict[bytes, int] = field(default_factory=dict)
    timed_out: bool = False


class Operation:
    """FIND_NODE towards ``key``: the base that the others extend."""

    kind = "find_node"
    query_type = MessageType.FIND_NODE

    def __init__(self, op_id: int, key: bytes, lookup: Lookup, deadline: float):
        self.op_id = op_id
        self.key = key
        self.lookup = lookup
        self.deadline = deadline
        self.phase = Phase.LOOKUP
        self.fanout_pending = 0
        self.fanout_sent = 0
        # Fan-out requests not yet sent, and those sent but not yet settled
        # (the core paces requests that wait for an answer).
        self.fanout_queue: deque[tuple[PeerInfo, KadMessage]] = deque()
        self.fanout_in_flight = 0
        self.stored = 0
        self.answer_hops = 0
        self.timed_out = False

    def query_message(self) -> KadMessage:
        return KadMessage(self.query_type, key=self.key)

    def on_answer(self, candidate: Candidate, message: KadMessage, now: float) -> None:
        """Inspect a lookup answer beyond its closer peers."""

    def wants_more(self) -> bool:
        return True

    def fanout(self, local: PeerInfo) -> list[tuple[PeerInfo, KadMessage, bool]]:
        """(peer, message, expects_response) to send once the lookup is over."""
        return []

    def on_fanout_answer(self, ok: bool, key: bytes) -> None:
        """A fan-out message for ``key`` was answered (or sent, if one-way) or failed."""
        self.fanout_pending -= 1
        if ok:
            self.stored += 1

    def closest_infos(self) -> list[PeerInfo]:
        return [c.info for c in self.lookup.closest_succeeded()]

    def result(self) -> OperationResult:
        closest = self.lookup.closest_succeeded()
        hops = self.answer_hops or (closest[0].hops if closest else 0)
        return OperationResult(
            op_id=self.op_id,
            kind=self.kind,
            key=self.key,
            closest=[c.info for c in closest],
            hops=hops,
            queries=self.lookup.queries_sent,
            messages=self.lookup.queries_sent + self.fanout_sent,
            stored=self.stored,
            timed_out=self.timed_out,
        )


class GetProvidersOperation(Operation):
    kind = "get_providers"
    query_type = MessageType.GET_PROVIDERS

    def __init__(self, op_id, key, lookup, deadline, wanted: int, known: list[PeerInfo], settle_on: int):
        super().__init__(op_id, key, lookup, deadline)
        self.wanted = wanted
        self.providers: dict[PeerId, PeerInfo] = {p.peer_id: p for p in known}
        self.settle_on = settle_on

    def on_answer(self, candidate, message, now):
        for provider in message.provider_peers:
            if provider.peer_id not in self.providers and len(self.providers) < self.wanted:
                self.providers[provider.peer_id] = provider
                if not self.answer_hops:
                    self.answer_hops = candidate.hops

    def wants_more(self):
        if len(self.providers) >= self.wanted:
            return False
        # With providers found, the settle_on closest answering ends it (KadConfig.provider_lookup_settle_on).
        return not (self.providers and self.lookup.settled(self.settle_on))

    def result(self):
        result = super().result()
        result.providers = list(self.providers.values())
        return result


class GetValueOperation(Operation):
    """GET_VALUE: every answer is validated here, never trusted.

    The best record is ours merged, by the validator, with every valid
    answer. The quorum counts peers whose answer holds all of the best one:
    an invalid answer never counts, and one the best has outdated stops
    counting (so junk or replayed records cannot end the lookup early). Peers
    that answered an invalid or outdated record are sent the best one when
    the lookup ends (:meth:`repairs`), as go-libp2p-kad-dht does.
    """

    kind = "get_value"
    query_type = MessageType.GET_VALUE

    def __init__(self, op_id, key, lookup, deadline, quorum: int, validator: Validator, local: bytes | None):
        super().__init__(op_id, key, lookup, deadline)
        self.quorum = quorum
        self.validator = validator
        self.value = local
        self.values_received = 0
        self._valid: dict[PeerId, tuple[PeerInfo, bytes]] = {}
        self._invalid: dict[PeerId, PeerInfo] = {}
        self._current: set[PeerId] = set()

    def on_answer(self, candidate, message, now):
        record = message.record
        if record is None or record.key != self.key:
            return
        info = candidate.info
        try:
            self.validator.validate(self.key, record.value, now)
        except RecordError:
            self._invalid[info.peer_id] = info
            return
        self._valid[info.peer_id] = (info, record.value)
        self.values_received += 1
        if not self.answer_hops:
            self.answer_hops = candidate.hops
        best = self.value
        try:
            self.value = self.validator.merge(self.key, best, record.value, now) if best else record.value
        except RecordError:
            pass  # nothing in it newer than the best we hold
        if self.value != best:  # a newer best: every earlier answer is judged again
            self._current = {p for p, (_, value) in self._valid.items() if self._is_current(value)}
        elif self._is_current(record.value):
            self._current.add(info.peer_id)

    def _is_current(self, value: bytes) -> bool:
        return self.validator.is_current(self.key, value, self.value)

    def wants_more(self):
        return len(self._current) < self.quorum

    def repairs(self) -> list[tuple[PeerInfo, KadMessage]]:
        """PUT_VALUE of the best record to each peer that answered an invalid or outdated one."""
        if self.value is None:
            return []
        stale = list(self._invalid.values()) + [info for p, (info, _) in self._valid.items() if p not in self._current]
        message = KadMessage(MessageType.PUT_VALUE, key=self.key, record=Record(self.key, self.value))
        return [(info, message) for info in stale]

    def result(self):
        result = super().result()
        result.value = self.value
        result.values_received = self.values_received
        return result


class PutValueOperation(Operation):
    """Find the k closest peers to the key, then PUT_VALUE to each of them.

    ``batch_id`` ties it to a batched put (:meth:`KademliaCore.put_values`)
    whose region lookup could not place this key.
    """

    kind = "put_value"

    def __init__(self, op_id, key, lookup, deadline, value: bytes, batch_id: int | None = None):
        super().__init__(op_id, key, lookup, deadline)
        self.value = value
        self.batch_id = batch_id

    def fanout(self, local):
        message = KadMessage(MessageType.PUT_VALUE, key=self.key, record=Record(self.key, self.value))
        return [(peer, message, True) for peer in self.closest_infos()]

    def stored_per_key(self) -> dict[bytes, int]:
        return {self.key: self.stored}


class RegionBatchOperation(Operation):
    """Publish records for many keys of one keyspace region with one lookup.

    The lookup collects the ``result_size`` (> k) closest peers to the
    region's centre. For each key the k closest of those are its true k
    closest whenever the key and its k-th closest peer both lie strictly
    inside a ball the lookup covered completely (XOR is an ultrametric:
    anything closer to the key is then closer to the centre too, so we saw
    it); that ball is taken to reach the nearest ``trusted_share`` of the
    peers collected. Keys for which that cannot be shown are handed back as
    ``unplaced_keys``.
    """

    trusted_share = 1.0

    expects_response = True

    def __init__(self, op_id, target_key, lookup, deadline, keys: list[bytes], k: int):
        super().__init__(op_id, target_key, lookup, deadline)
        self.keys = keys
        self.k = k
        self.unplaced: list[bytes] = []

    def message_for(self, key: bytes, local: PeerInfo) -> KadMessage:
        raise NotImplementedError

    def placements(self) -> list[tuple[bytes, list[PeerInfo]]]:
        """Each placeable key with its k closest peers; the others go to ``unplaced``."""
        if self.timed_out:
            # Cut short, the lookup pinned down nobody: what answered in time
            # may lie anywhere on the way. Placed there (the lookup's own key
            # counted as found), records landed 50-140 ranks from their key
            # on a loaded 200-node bench, and the confirmation probes asked
            # those same peers, so a record nobody could find counted as published.
            self.unplaced.extend(self.keys)
            return []
        covered = self.lookup.closest_succeeded()
        # Answers list at most k peers, so fewer than k means the lookup met
        # every peer there is; fewer than result_size proves nothing.
        exhaustive = len(covered) < self.k
        radius = covered[max(0, int(len(covered) * self.trusted_share) - 1)].distance if covered else 0
        placed = []
        for key in self.keys:
            position = kad_key(key)
            nearest = sorted(covered, key=lambda c: c.key ^ position)[: self.k]
            # The key the lookup itself was for has its closest peers found
            # as any lookup finds them (a retry batch is just that key).
            inside = position == self.lookup.target or (
                position ^ self.lookup.target < radius and (not nearest or nearest[-1].key ^ position < radius)
            )
            if not covered or not (exhaustive or inside):
                self.unplaced.append(key)
                continue
            placed.append((key, [c.info for c in nearest]))
        return placed

    def fanout(self, local):
        messages = []
        for key, peers in self.placements():
            message = self.message_for(key, local)
            messages.extend((peer, message, self.expects_response) for peer in peers)
        return messages

    def placed_keys(self) -> list[bytes]:
        unplaced = set(self.unplaced)
        return [k for k in self.keys if k not in unplaced]

    def result(self):
        result = super().result()
        result.unplaced_keys = list(self.unplaced)
        return result


class ProvideBatchOperation(RegionBatchOperation):
    """The lookup for a region's provider records.

    It sends nothing itself: ``assignments`` (peer, key) go to the
    reprovider, which paces them to each receiver's rate limit and confirms
    them (reprovide.py).
    """

    kind = "provide"
    # Each answer lists only k peers, so the farther ranks of what a lookup
    # collects are found by chance. Simulated, 300 nodes whose tables the
    # protocol built, 64 peers collected: trusting all left 5% of records on
    # fewer than 19 of their 20 closest peers; trusting the nearest 60%, none.
    trusted_share = 0.6

    def __init__(self, op_id, target_key, lookup, deadline, keys, k):
        super().__init__(op_id, target_key, lookup, deadline, keys, k)
        self.assignments: list[tuple[PeerInfo, bytes]] = []

    def fanout(self, local):
        self.assignments = [(peer, key) for key, peers in self.placements() for peer in peers]
        return []


class PutValueBatchOperation(RegionBatchOperation):
    """PUT_VALUE for every key of a region, part of the batched put ``batch_id``."""

    kind = "put_value_batch"

    def __init__(self, op_id, target_key, lookup, deadline, keys, k, values: dict[bytes, bytes], batch_id: int):
        super().__init__(op_id, target_key, lookup, deadline, keys, k)
        self.values = values
        self.batch_id = batch_id
        self._stored = dict.fromkeys(keys, 0)

    def message_for(self, key, local):
        return KadMessage(MessageType.PUT_VALUE, key=key, record=Record(key, self.values[key]))

    def on_fanout_answer(self, ok, key):
        super().on_fanout_answer(ok, key)
        if ok:
            self._stored[key] += 1

    def stored_per_key(self) -> dict[bytes, int]:
        # Unplaced keys count 0 here; the lookup of their own reports them later.
        return dict(self._stored)
