"""Republishing our provider records, batched by keyspace region.

kubo's classic reprovider runs one full lookup per key, which for 100,000
keys is millions of lookup messages per interval. Here keys are sorted by
their keyspace position and grouped by prefix into regions expected to hold
about k/2 peers; one lookup per region finds the peers around it, and each
key's provider records go to its own k closest among them (see
operations.ProvideBatchOperation for why that is exact). Keys the batch
cannot place are retried in a batch of their own.

Falling behind is the failure that matters: if a sweep takes longer than
the records live, content silently disappears from the network. The
``hypermesh_dht_reprovide_overdue_keys`` gauge counts keys whose records may
already have expired, and a warning is logged whenever it is non-zero.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

from prometheus_client import Counter, Gauge

from .keys import KEY_BITS, kad_key

log = logging.getLogger(__name__)

REPROVIDED_RECORDS = Counter(
    "hypermesh_dht_reprovide_records_total", "Provider records republished (keys, not messages)"
)
REPROVIDE_LOOKUPS = Counter("hypermesh_dht_reprovide_lookups_total", "Region lookups run by the reprovider")
OVERDUE_KEYS = Gauge(
    "hypermesh_dht_reprovide_overdue_keys",
    "Provided keys not republished within the provider record lifetime (their records may have expired)",
)
REPROVIDE_LAG = Gauge(
    "hypermesh_dht_reprovide_lag_seconds",
    "How far the oldest pending republish is past its due time",
)


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


@dataclass(frozen=True, slots=True)
class ProvideBatch:
    lookup_key: bytes
    keys: tuple[bytes, ...]
    retry: bool = False


class Reprovider:
    """Decides which keys to (re)publish when, grouped into region batches.

    Sans-IO: the core asks :meth:`take_batches` on its timer and reports
    each batch's outcome with :meth:`batch_done`.
    """

    def __init__(
        self,
        store,
        *,
        k: int,
        republish_interval: float,
        record_ttl: float,
        max_parallel_batches: int = 4,
        coalesce_delay: float = 1.0,
    ):
        self.store = store
        self.k = k
        self.republish_interval = republish_interval
        self.record_ttl = record_ttl
        self.max_parallel_batches = max_parallel_batches
        # New provide() calls wait this long so that a burst of them shares lookups.
        self.coalesce_delay = coalesce_delay
        self._queue: list[ProvideBatch] = []
        self._in_progress: set[bytes] = set()
        self._running = 0
        self._next_sweep: float | None = None
        self._warned_overdue = 0

    def add(self, keys: list[bytes], now: float) -> None:
        self.store.add_local_provides(keys, now)
        self.schedule(now + self.coalesce_delay)

    def remove(self, key: bytes) -> None:
        self.store.remove_local_provide(key)

    def schedule(self, when: float) -> None:
        if self._next_sweep is None or when < self._next_sweep:
            self._next_sweep = when

    def postpone(self, when: float) -> None:
        """Move a due sweep to ``when`` (unlike schedule, which only brings sweeps forward)."""
        self._next_sweep = when

    def get_timer(self) -> float | None:
        return self._next_sweep

    def plan(self, now: float, network_size: int) -> None:
        """Queue batches for every key that is due; called when the timer fires."""
        if self._next_sweep is None or now < self._next_sweep:
            return
        self._next_sweep = None
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
        """Batches to start now, within the parallelism limit."""
        started = []
        while self._queue and self._running < self.max_parallel_batches:
            started.append(self._queue.pop(0))
            self._running += 1
            REPROVIDE_LOOKUPS.inc()
        return started

    def batch_done(self, batch: ProvideBatch, placed: list[bytes], unplaced: list[bytes], now: float) -> None:
        self._running -= 1
        self.store.mark_published(placed, now)
        REPROVIDED_RECORDS.inc(len(placed))
        self._in_progress.difference_update(placed)
        if batch.retry:
            # A single-key lookup that still could not place its key (tiny or
            # partitioned network): try again at the next sweep.
            self._in_progress.difference_update(unplaced)
            if unplaced:
                self.schedule(now + self.republish_interval / 10)
        else:
            self._queue.extend(ProvideBatch(key, (key,), retry=True) for key in unplaced)

    def idle(self) -> bool:
        return not self._queue and self._running == 0

    def report_overdue(self, now: float, local: dict[bytes, float] | None = None) -> int:
        """Update the overdue metrics, warn if any key is overdue; returns the count."""
        if local is None:
            local = self.store.local_provides()
        published = [p for p in local.values() if p > 0]
        overdue = sum(1 for p in published if now - p >= self.record_ttl)
        OVERDUE_KEYS.set(overdue)
        oldest = min(published, default=now)
        REPROVIDE_LAG.set(max(0.0, now - oldest - self.republish_interval))
        if overdue and overdue != self._warned_overdue:
            log.warning(
                "reprovide is falling behind: %d of %d provided keys were last published more than "
                "%.1f h ago, so their provider records may have expired; the network cannot find "
                "them until the current sweep reaches them",
                overdue,
                len(local),
                self.record_ttl / 3600,
            )
        self._warned_overdue = overdue
        return overdue
