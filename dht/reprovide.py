"""Republishing our provider records, batched by keyspace region.

kubo's classic reprovider runs one full lookup per key, which for 100,000
keys is millions of lookup messages per interval. Here keys are sorted by
their keyspace position and grouped by prefix into regions expected to hold
about k/2 peers; one lookup per region finds the peers around it, and each
key's provider records go to its own k closest among them (see
operations.RegionBatchOperation for when that is exact). Keys a region
cannot place are looked up again in narrower sub-regions, and what those
cannot place one key at a time.

ADD_PROVIDER has no reply, and a receiver drops what exceeds its per-peer
token bucket without a word. So each peer's ADD_PROVIDERs are paced to what
that bucket lets in (:class:`ProviderPacer`), and a region counts as
published only once a few of the peers sent the most answer GET_PROVIDERS
with our record for the last key each was sent (the tail is what an
exhausted bucket drops). Each is asked once its own records are written,
and the region is settled as soon as the answers still outstanding could
not change the verdict: a slow or vanished peer holds up nothing. Regions
that are not confirmed are counted, logged and sent again later.

Falling behind is the failure that matters: if a sweep takes longer than
the records live, content silently disappears from the network. The
``hypermesh_dht_reprovide_overdue_keys`` gauge counts keys whose records may
already have expired or were never confirmed published, and a warning is
logged whenever it is non-zero. A limit of the probes: a republished region
is confirmed by the previous round's records too, so a dropped republish
shows only when those expire.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
from collections import Counter, deque
from dataclasses import dataclass, field

from hypermesh.transport.identity import PeerId

from .keys import KEY_BITS, kad_key
from .messages import PeerInfo
from .metrics import DhtMetrics
from .ratelimit import RateLimit, TokenBuckets

log = logging.getLogger(__name__)

def group_by_region(keys: list[bytes], network_size: int, k: int) -> list[tuple[bytes, tuple[bytes, ...]]]:
    """Group keys by keyspace prefix so each region holds ~k/2 peers.

    Returns (lookup key, keys) per region. FIND_NODE needs key bytes (the
    server hashes them), so a region's lookup heads for the member nearest
    its middle rather than for the centre itself.
    """
    expected_regions = max(1, network_size / max(1, k // 2))
    prefix_bits = min(KEY_BITS - 1, max(0, int(math.log2(expected_regions))))
    shift = KEY_BITS - prefix_bits
    regions: dict[int, list[tuple[int, bytes]]] = {}
    for key in keys:
        position = kad_key(key)
        regions.setdefault(position >> shift, []).append((position, key))
    grouped = []
    for _, members in sorted(regions.items()):
        members.sort()
        grouped.append((members[len(members) // 2][1], tuple(key for _, key in members)))
    return grouped


# Keys a region lookup cannot place are looked up again in sub-regions this
# many times narrower, and what those cannot place one key at a time.
SUB_REGION_NARROWING = 4
REGION, SUB_REGION, SINGLE_KEY = 0, 1, 2
LEVEL_NAMES = ("region", "sub_region", "single_key")  # the reprovide_lookups metric's label


@dataclass(frozen=True, slots=True)
class ProvideBatch:
    lookup_key: bytes
    keys: tuple[bytes, ...]
    level: int = REGION


@dataclass(frozen=True, slots=True)
class Send:
    """An ADD_PROVIDER (or, for a probe, a GET_PROVIDERS) the core should send now."""

    publication: int
    peer: PeerInfo
    key: bytes


@dataclass(frozen=True, slots=True)
class Settled:
    """A publication ended: ``confirmed`` keys are marked published, the others are not."""

    publication: int
    confirmed: tuple[bytes, ...]
    unconfirmed: tuple[bytes, ...]


class ProviderPacer:
    """Releases ADD_PROVIDERs per peer no faster than the receiver's rate limit lets them in.

    Receivers drop ADD_PROVIDERs beyond their per-peer token bucket without
    a word (the message has no reply), so the sender keeps a bucket of its
    own for each peer, a ``share`` of the receiver's, and holds back what
    does not fit. Released in quanta of about a second's worth, so a long
    queue costs one timer per peer per second rather than one per message.
    """

    def __init__(self, limit: RateLimit, share: float = 0.8):
        self._buckets = TokenBuckets(RateLimit(limit.rate * share, max(1.0, limit.burst * share)))
        self._rate = limit.rate * share
        self._quantum = max(1.0, self._rate)
        self._queues: dict[PeerId, deque[Send]] = {}
        self._ready: list[tuple[float, int, PeerId]] = []
        self._order = itertools.count()

    def enqueue(self, send: Send, now: float) -> None:
        peer = send.peer.peer_id
        queue = self._queues.get(peer)
        if queue is None:
            queue = self._queues[peer] = deque()
            heapq.heappush(self._ready, (now, next(self._order), peer))
        queue.append(send)

    def release(self, now: float) -> list[Send]:
        released = []
        while self._ready and self._ready[0][0] <= now:
            _, _, peer = heapq.heappop(self._ready)
            queue = self._queues[peer]
            count = min(len(queue), int(self._buckets.available(peer, now)))
            if count:
                self._buckets.allow(peer, now, count)
                released.extend(queue.popleft() for _ in range(count))
            if not queue:
                del self._queues[peer]
                continue
            wanted = min(self._quantum, len(queue))
            wait = max(0.0, wanted - self._buckets.available(peer, now)) / self._rate
            heapq.heappush(self._ready, (now + wait, next(self._order), peer))
        return released

    def next_release(self) -> float | None:
        return self._ready[0][0] if self._ready else None


@dataclass(slots=True)
class _Publication:
    """A region batch between the end of its lookup and its confirmation."""

    batch: ProvideBatch
    keys: list[bytes]
    # ADD_PROVIDERs not yet settled, in all and per peer.
    unsettled: int = 0
    unsettled_by_peer: Counter[PeerId] = field(default_factory=Counter)
    # Per peer, the last ADD_PROVIDER released: a receiver out of tokens
    # drops the tail of what it was sent.
    last_sent: dict[PeerId, Send] = field(default_factory=dict)
    # The peers sent the most, each probed once its own ADD_PROVIDERs have
    # settled (probe_at: when), not once every peer's have: a slow or
    # vanished peer elsewhere in the region holds up nothing.
    probe_targets: tuple[PeerId, ...] = ()
    probe_at: dict[PeerId, float] = field(default_factory=dict)
    confirmed: int = 0
    missing: int = 0
    unanswered: int = 0

    def outcome(self) -> bool | None:
        """Whether the probes confirm the publication; None while those
        outstanding could still tip it either way.

        Confirmed: at least one probe lists us and at most a third of those
        that answered do not. A few records lost in transit leave each key on
        most of its k closest peers; receivers out of tokens (or dropping on
        purpose) lose the tails, and most probes come back missing.
        """
        outstanding = len(self.probe_targets) - self.confirmed - self.missing - self.unanswered
        if self.confirmed and 3 * (self.missing + outstanding) <= self.confirmed + self.missing + outstanding:
            return True
        best_case = self.confirmed + outstanding
        if best_case == 0 or 3 * self.missing > best_case + self.missing:
            return False
        return None


class Reprovider:
    """Decides which keys to (re)publish when, grouped into region batches.

    Sans-IO: the core asks :meth:`take_batches` on its timer, runs each
    batch's lookup and hands the outcome to :meth:`lookup_done`; from then
    on it sends what :meth:`take_sends` and :meth:`take_probes` return,
    reports how each went (:meth:`send_settled`, :meth:`probe_answered`)
    and collects ended publications with :meth:`take_settled`.
    """

    def __init__(
        self,
        store,
        *,
        k: int,
        republish_interval: float,
        record_ttl: float,
        add_provider_limit: RateLimit,
        metrics: DhtMetrics,
        max_parallel_batches: int = 4,
        coalesce_delay: float = 1.0,
        confirm_probes: int = 6,
        confirm_delay: float = 1.0,
        first_publish_grace: float = 3600.0,
        unconfirmed_retry_delay: float = 600.0,
    ):
        self.store = store
        self.k = k
        self.republish_interval = republish_interval
        self.record_ttl = record_ttl
        self.max_parallel_batches = max_parallel_batches
        # New provide() calls wait this long so that a burst of them shares lookups.
        self.coalesce_delay = coalesce_delay
        self.confirm_probes = confirm_probes
        # Time for the last ADD_PROVIDERs to be read before we ask about them.
        self.confirm_delay = confirm_delay
        # A key never published counts as overdue once it has waited this long.
        self.first_publish_grace = first_publish_grace
        self.unconfirmed_retry_delay = unconfirmed_retry_delay
        self.pacer = ProviderPacer(add_provider_limit)
        self.metrics = metrics
        self._queue: list[ProvideBatch] = []
        self._in_progress: set[bytes] = set()
        self._running = 0
        self._next_sweep: float | None = None
        self._warned_overdue = 0
        self._network_size = 1
        self._publications: dict[int, _Publication] = {}
        self._settled: list[Settled] = []
        # When each never-published key was first seen waiting (by add() or a sweep).
        self._waiting_since: dict[bytes, float] = {}
        self.unconfirmed: set[bytes] = set()

    def add(self, keys: list[bytes], now: float) -> None:
        self.store.add_local_provides(keys, now)
        for key in keys:
            self._waiting_since.setdefault(key, now)
        self.schedule(now + self.coalesce_delay)

    def remove(self, key: bytes) -> None:
        self.store.remove_local_provide(key)
        self._waiting_since.pop(key, None)
        self.unconfirmed.discard(key)

    def schedule(self, when: float) -> None:
        if self._next_sweep is None or when < self._next_sweep:
            self._next_sweep = when

    def postpone(self, when: float) -> None:
        """Move a due sweep to ``when`` (unlike schedule, which only brings sweeps forward)."""
        self._next_sweep = when

    def sweep_due(self, now: float) -> bool:
        return self._next_sweep is not None and self._next_sweep <= now

    def get_timer(self) -> float | None:
        timers = [self._next_sweep, self.pacer.next_release()]
        timers += [min(p.probe_at.values(), default=None) for p in self._publications.values()]
        return min((t for t in timers if t is not None), default=None)

    def plan(self, now: float, network_size: int) -> None:
        """Queue batches for every key that is due; called when the sweep timer fires."""
        if not self.sweep_due(now):
            return
        self._next_sweep = None
        self._network_size = network_size
        local = self.store.local_provides()
        due = [
            key
            for key, published in local.items()
            if now - published >= self.republish_interval and key not in self._in_progress
        ]
        self.report_overdue(now, local)
        if due:
            self._queue.extend(self.region_batches(due, network_size))
            self._in_progress.update(due)
        # Wake again when the next key falls due.
        next_due = min(
            (p + self.republish_interval for k, p in local.items() if k not in self._in_progress),
            default=None,
        )
        if next_due is not None:
            self.schedule(max(next_due, now + self.coalesce_delay))

    def region_batches(self, keys: list[bytes], network_size: int) -> list[ProvideBatch]:
        return [ProvideBatch(centre, members) for centre, members in group_by_region(keys, network_size, self.k)]

    def take_batches(self) -> list[ProvideBatch]:
        """Batches whose lookups start now, within the parallelism limit.

        A batch holds its slot until its publication is confirmed, so the
        pacer's queues hold a few regions' records, not a whole sweep's.
        """
        started = []
        while self._queue and self._running < self.max_parallel_batches:
            batch = self._queue.pop(0)
            started.append(batch)
            self._running += 1
            self.metrics.reprovide_lookups.labels(LEVEL_NAMES[batch.level]).inc()
        return started

    def lookup_done(self, publication: int, batch: ProvideBatch, assignments: list[tuple[PeerInfo, bytes]],
                    unplaced: list[bytes], now: float) -> None:
        """A batch's lookup ended: queue its ADD_PROVIDERs (``assignments``) with the pacer."""
        if batch.level == SINGLE_KEY:
            # A single-key lookup that still could not place its key (tiny or
            # partitioned network): try again at the next sweep.
            self._in_progress.difference_update(unplaced)
            if unplaced:
                self.schedule(now + self.republish_interval / 10)
        elif batch.level == SUB_REGION:
            self._queue.extend(ProvideBatch(key, (key,), SINGLE_KEY) for key in unplaced)
        elif unplaced:
            # They lie near the region's edges: narrower lookups place most.
            sub_regions = group_by_region(unplaced, self._network_size * SUB_REGION_NARROWING, self.k)
            self._queue.extend(ProvideBatch(centre, keys, SUB_REGION) for centre, keys in sub_regions)
        unplaced_keys = set(unplaced)
        entry = _Publication(batch, [key for key in batch.keys if key not in unplaced_keys])
        if not assignments:
            self._running -= 1
            self._settled.append(Settled(publication, (), ()))
            return
        self._publications[publication] = entry
        entry.unsettled = len(assignments)
        entry.unsettled_by_peer.update(peer.peer_id for peer, _ in assignments)
        entry.probe_targets = tuple(peer for peer, _ in entry.unsettled_by_peer.most_common(self.confirm_probes))
        for peer, key in assignments:
            self.pacer.enqueue(Send(publication, peer, key), now)

    def take_sends(self, now: float) -> list[Send]:
        released = self.pacer.release(now)
        for send in released:
            entry = self._publications.get(send.publication)
            if entry is not None:  # else settled already by the probes: sent all the same
                # Kept in sending order, not in the order writes end (a lost
                # message ends last, at its timeout).
                entry.last_sent[send.peer.peer_id] = send
        return released

    def send_settled(self, send: Send, now: float) -> None:
        """An ADD_PROVIDER was written to its peer, or the write failed."""
        entry = self._publications.get(send.publication)
        if entry is None:
            return
        # Whether the write failed or not: a failed one may still have been
        # read (a peer that resets the stream after reading); the probe judges.
        entry.unsettled -= 1
        peer = send.peer.peer_id
        entry.unsettled_by_peer[peer] -= 1
        if entry.unsettled_by_peer[peer] == 0 and peer in entry.probe_targets:
            entry.probe_at[peer] = now + self.confirm_delay
        if entry.unsettled == 0 and not entry.probe_targets:  # probing is off
            self._settle(send.publication, True, now)

    def take_probes(self, now: float) -> list[Send]:
        """GET_PROVIDERS to send now: to the peers sent the most, for the last key each was sent."""
        probes = []
        for entry in self._publications.values():
            for peer, at in list(entry.probe_at.items()):
                if at <= now:
                    del entry.probe_at[peer]
                    probes.append(entry.last_sent[peer])
        return probes

    def probe_answered(self, probe: Send, providers: list[PeerId] | None, listed_max: int, local: PeerId,
                       now: float) -> None:
        """A probe's answer (None: no answer), ``listed_max`` being how many providers a peer lists at most."""
        entry = self._publications.get(probe.publication)
        if entry is None:
            return
        if providers is not None and local in providers:
            entry.confirmed += 1
            outcome = "confirmed"
        elif providers is not None and len(providers) < listed_max:
            entry.missing += 1
            outcome = "missing"
        else:  # no answer, or a full list that may have left us out
            entry.unanswered += 1
            outcome = "unanswered"
        self.metrics.confirm_probes.labels(outcome).inc()
        confirmed = entry.outcome()
        if confirmed is not None:
            self._settle(probe.publication, confirmed, now)

    def _settle(self, publication: int, confirmed: bool, now: float) -> None:
        entry = self._publications.pop(publication)
        self._running -= 1
        keys = tuple(entry.keys)
        self._in_progress.difference_update(keys)
        if confirmed:
            self.store.mark_published(list(keys), now)
            self.metrics.reprovided_records.inc(len(keys))
            self.unconfirmed.difference_update(keys)
            for key in keys:
                self._waiting_since.pop(key, None)
            self._settled.append(Settled(publication, keys, ()))
            return
        self.unconfirmed.update(keys)
        self.metrics.unconfirmed_keys.set(len(self.unconfirmed))
        self.metrics.unconfirmed_records.inc(len(keys))
        log.warning(
            "%d provider records were sent but not confirmed (probes: %d held our record, %d did not, "
            "%d gave no answer); they are not marked published and are sent again in %.0f s",
            len(keys), entry.confirmed, entry.missing, entry.unanswered, self.unconfirmed_retry_delay,
        )
        self.schedule(now + self.unconfirmed_retry_delay)
        self._settled.append(Settled(publication, (), keys))

    def take_settled(self) -> list[Settled]:
        settled, self._settled = self._settled, []
        if settled:
            self.metrics.unconfirmed_keys.set(len(self.unconfirmed))
        return settled

    def idle(self) -> bool:
        return not self._queue and self._running == 0

    def report_overdue(self, now: float, local: dict[bytes, float] | None = None) -> int:
        """Update the overdue metrics, warn if any key is overdue; returns the count.

        Overdue: published longer ago than a record lives, or never
        published although waiting longer than ``first_publish_grace``.
        Either way nobody can find us as its provider.
        """
        if local is None:
            local = self.store.local_provides()
        published = [p for p in local.values() if p > 0]
        expired = sum(1 for p in published if now - p >= self.record_ttl)
        never = 0
        for key, p in local.items():
            if p == 0 and now - self._waiting_since.setdefault(key, now) >= self.first_publish_grace:
                never += 1
        overdue = expired + never
        self.metrics.overdue_keys.set(overdue)
        oldest = min(published, default=now)
        self.metrics.reprovide_lag.set(max(0.0, now - oldest - self.republish_interval))
        if overdue and overdue != self._warned_overdue:
            log.warning(
                "reprovide is falling behind: %d of %d provided keys cannot be found through the DHT "
                "(%d last published more than %.1f h ago, so their records may have expired; %d never "
                "confirmed published in %.0f s)",
                overdue,
                len(local),
                expired,
                self.record_ttl / 3600,
                never,
                self.first_publish_grace,
            )
        self._warned_overdue = overdue
        return overdue
