"""The Kademlia routing table: k-buckets with replacement caches and IP diversity.

Keys are SHA-256 of the peer ID bytes as 256-bit ints (see keys.py). Bucket
``i`` holds peers at XOR distance [2**i, 2**(i+1)) from us. Each bucket keeps
at most k live peers, least recently seen first, plus a small replacement
cache of peers waiting for a slot. A full bucket never drops a peer on
hearsay: the caller pings the stalest entry (liveness check) and only a
failed check makes room, which is what makes Kademlia resist flooding by
fresh identities.

Eclipse resistance: at most ``max_per_group_per_bucket`` peers of one IP
prefix (/24 for IPv4, /48 for IPv6) per bucket and ``max_per_group_in_table``
in the whole table, so an attacker with one subnet cannot own a bucket. The
group comes from the address we actually observed the peer on, never from
addresses it advertises about itself.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from collections import Counter
from dataclasses import dataclass, field

from multiaddr import Multiaddr

from hypermesh.transport.identity import PeerId

from .keys import KEY_BITS, bucket_index
from .messages import PeerInfo

IPV4_GROUP_PREFIX = 24
IPV6_GROUP_PREFIX = 48


@functools.lru_cache(maxsize=1 << 16)
def ip_group(addr: bytes | str | None, *, exempt_private: bool = True) -> str | None:
    """The diversity group of a multiaddr's IP, or None when none applies.

    Loopback, private and link-local addresses are exempt by default: they
    cannot be reached from the open internet, and local test networks put
    every peer in one of them.
    """
    if addr is None:
        return None
    try:
        multiaddr = Multiaddr(addr)
        for proto_name in ("ip4", "ip6"):
            try:
                text = multiaddr.value_for_protocol(proto_name)
            except Exception:  # absent protocol raises ProtocolLookupError
                continue
            if not text:
                continue
            ip = ipaddress.ip_address(text)
            if ip.version == 6 and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            if exempt_private and (ip.is_private or ip.is_loopback or ip.is_link_local):
                return None
            prefix = IPV4_GROUP_PREFIX if ip.version == 4 else IPV6_GROUP_PREFIX
            return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))
    except Exception:  # an unparseable address simply has no group
        return None
    return None


@dataclass(slots=True, eq=False)  # identity equality: list.remove must not compare fields
class RoutingEntry:
    peer_id: PeerId
    key: int
    info: PeerInfo  # what FIND_NODE answers carry; rebuilt only when addresses change
    ip_group: str | None
    last_seen: float
    failures: int = 0

    @property
    def addrs(self) -> tuple[bytes, ...]:
        return self.info.addrs


@dataclass(slots=True)
class Bucket:
    entries: list[RoutingEntry] = field(default_factory=list)  # least recently seen first
    replacements: list[RoutingEntry] = field(default_factory=list)  # most recent last
    last_refreshed: float = 0.0
    last_liveness_check: float = float("-inf")
    groups: Counter = field(default_factory=Counter)


class ObserveResult(enum.Enum):
    ADDED = "added"
    UPDATED = "updated"
    # The bucket is full; the peer waits in the replacement cache and the
    # returned entry should get a liveness check.
    PENDING = "pending"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class RoutingConfig:
    k: int = 20
    replacement_cache_size: int = 10
    max_per_group_per_bucket: int = 2
    max_per_group_in_table: int = 10
    # Failed queries in a row before a peer is evicted even without a replacement.
    max_failures: int = 2
    # A full bucket asks for a liveness check of its stalest entry at most this
    # often; otherwise every new contact would trigger a check, and each check
    # is a new contact for the checked peer: a storm.
    liveness_check_gap: float = 60.0


class RoutingTable:
    def __init__(self, local_key: int, config: RoutingConfig = RoutingConfig()):
        self.local_key = local_key
        self.config = config
        # Created on first use: a table only ever fills the ~log2(N) far buckets.
        self.buckets: dict[int, Bucket] = {}
        self._entries: dict[PeerId, RoutingEntry] = {}
        self._groups: Counter[str] = Counter()
        self._nonempty: set[int] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, peer_id: PeerId) -> bool:
        return peer_id in self._entries

    def get(self, peer_id: PeerId) -> RoutingEntry | None:
        return self._entries.get(peer_id)

    def entries(self) -> list[RoutingEntry]:
        return list(self._entries.values())

    def bucket(self, index: int) -> Bucket:
        bucket = self.buckets.get(index)
        if bucket is None:
            bucket = self.buckets[index] = Bucket()
        return bucket

    def _group_allowed(self, bucket: Bucket, group: str | None) -> bool:
        if group is None:
            return True
        return (
            self._groups[group] < self.config.max_per_group_in_table
            and bucket.groups[group] < self.config.max_per_group_per_bucket
        )

    def _insert(self, bucket: Bucket, entry: RoutingEntry) -> None:
        if not bucket.entries:
            self._nonempty.add(bucket_index(self.local_key, entry.key))
        bucket.entries.append(entry)
        self._entries[entry.peer_id] = entry
        if entry.ip_group is not None:
            self._groups[entry.ip_group] += 1
            bucket.groups[entry.ip_group] += 1

    def observe(
        self,
        peer_id: PeerId,
        key: int,
        addrs: tuple[bytes, ...],
        now: float,
        group: str | None = None,
    ) -> tuple[ObserveResult, RoutingEntry | None]:
        """Record that ``peer_id`` answered us or queried us as a DHT server.

        Returns the outcome and, for PENDING, the entry to liveness-check
        (None when the bucket had a check recently or its stalest entry is fresh).
        """
        index = bucket_index(self.local_key, key)
        if index < 0:
            return ObserveResult.REJECTED, None
        bucket = self.bucket(index)
        existing = self._entries.get(peer_id)
        if existing is not None:
            existing.last_seen = now
            existing.failures = 0
            if addrs and addrs != existing.info.addrs:
                existing.info = PeerInfo(peer_id, addrs)
            bucket.entries.remove(existing)
            bucket.entries.append(existing)
            return ObserveResult.UPDATED, None
        if not self._group_allowed(bucket, group):
            return ObserveResult.REJECTED, None
        entry = RoutingEntry(peer_id, key, PeerInfo(peer_id, addrs), group, now)
        if len(bucket.entries) < self.config.k:
            self._insert(bucket, entry)
            return ObserveResult.ADDED, None
        bucket.replacements = [r for r in bucket.replacements if r.peer_id != peer_id]
        bucket.replacements.append(entry)
        del bucket.replacements[: -self.config.replacement_cache_size]
        stalest = bucket.entries[0]
        gap = self.config.liveness_check_gap
        if now - bucket.last_liveness_check < gap or now - stalest.last_seen < gap:
            return ObserveResult.PENDING, None
        bucket.last_liveness_check = now
        return ObserveResult.PENDING, stalest

    def remove(self, peer_id: PeerId) -> RoutingEntry | None:
        """Drop a peer and promote the freshest replacement that fits. Returns the promoted one."""
        entry = self._entries.pop(peer_id, None)
        if entry is None:
            return None
        bucket = self.bucket(bucket_index(self.local_key, entry.key))
        bucket.entries.remove(entry)
        if not bucket.entries:
            self._nonempty.discard(bucket_index(self.local_key, entry.key))
        if entry.ip_group is not None:
            for counter in (self._groups, bucket.groups):
                counter[entry.ip_group] -= 1
                if not counter[entry.ip_group]:
                    del counter[entry.ip_group]
        while bucket.replacements:
            candidate = bucket.replacements.pop()
            if self._group_allowed(bucket, candidate.ip_group):
                self._insert(bucket, candidate)
                return candidate
        return None

    def record_failure(self, peer_id: PeerId) -> bool:
        """A query to ``peer_id`` failed. Returns True when it was evicted.

        A peer with a replacement waiting is evicted at once; otherwise it
        gets ``max_failures`` chances, since a smaller table is worse than a
        peer that is slow now and then.
        """
        entry = self._entries.get(peer_id)
        if entry is None:
            for bucket in self.buckets.values():
                if bucket.replacements:
                    bucket.replacements = [r for r in bucket.replacements if r.peer_id != peer_id]
            return False
        entry.failures += 1
        bucket = self.bucket(bucket_index(self.local_key, entry.key))
        if bucket.replacements or entry.failures >= self.config.max_failures:
            self.remove(peer_id)
            return True
        return False

    def closest(self, target: int, count: int, exclude: PeerId | None = None) -> list[RoutingEntry]:
        """The ``count`` entries closest to ``target`` by XOR distance.

        All keys in bucket i share their bits above i with ``local``, so each
        bucket covers one contiguous, disjoint interval of distances from
        ``target``; visiting buckets in order of that interval and sorting
        only inside them gives the exact answer while touching few entries.
        """
        delta = target ^ self.local_key
        order = sorted((((delta >> index) ^ 1) << index, index) for index in self._nonempty)
        excluded = exclude.multihash if exclude is not None else None
        result: list[RoutingEntry] = []
        for _, index in order:
            entries = sorted(self.buckets[index].entries, key=lambda e: e.key ^ target)
            result.extend(e for e in entries if e.peer_id.multihash != excluded)
            if len(result) >= count:
                break
        return result[:count]

    def stale_entries(self, now: float, max_age: float) -> list[RoutingEntry]:
        """Entries not heard from in ``max_age`` seconds: due a liveness check."""
        return [e for e in self._entries.values() if now - e.last_seen > max_age]

    def buckets_to_refresh(self, now: float, interval: float) -> list[int]:
        """Bucket indices whose region was not looked up within ``interval``.

        Only buckets from the far end down to one past the closest non-empty
        bucket: the ones below are (almost surely) empty in any network, and
        refreshing them would cost a lookup each for nothing. Nor a full
        bucket whose every peer was heard from within ``interval``: a lookup
        there could add nobody.
        """
        if not self._nonempty:
            return []
        lowest = max(min(self._nonempty) - 1, 0)
        return [
            i
            for i in range(KEY_BITS - 1, lowest - 1, -1)
            if now - self.bucket(i).last_refreshed >= interval and not self._full_and_fresh(i, now, interval)
        ]

    def _full_and_fresh(self, index: int, now: float, interval: float) -> bool:
        entries = self.bucket(index).entries
        # Least recently seen first: the first entry is the stalest.
        return len(entries) >= self.config.k and now - entries[0].last_seen < interval

    def mark_refreshed(self, target: int, now: float) -> None:
        index = bucket_index(self.local_key, target)
        if index >= 0:
            self.bucket(index).last_refreshed = now

    def mark_covered(self, radius: int, now: float) -> None:
        """A lookup of our own key heard from every peer nearer than ``radius``:
        the buckets lying wholly inside that ball count as refreshed."""
        if not self._nonempty:
            return
        for index in range(max(min(self._nonempty) - 1, 0), KEY_BITS):  # the buckets buckets_to_refresh visits
            if (1 << (index + 1)) > radius:  # bucket ``index`` holds distances [2**index, 2**(index+1))
                return
            self.bucket(index).last_refreshed = now
