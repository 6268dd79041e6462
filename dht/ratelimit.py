"""Per-peer token buckets for the requests that make us store something.

ADD_PROVIDER and PUT_VALUE cost us disk and validation work, so each peer
gets a bucket of ``burst`` tokens refilled at ``rate`` per second. The table
of buckets is itself bounded (least recently used peers are forgotten; a
forgotten peer starts again with a full bucket, which is no worse than a new
identity, and identities are free anyway).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Hashable


@dataclass(frozen=True, slots=True)
class RateLimit:
    rate: float  # tokens per second
    burst: float  # bucket size


class TokenBuckets:
    def __init__(self, limit: RateLimit, max_tracked: int = 10_000):
        self.limit = limit
        self.max_tracked = max_tracked
        self._buckets: OrderedDict[Hashable, tuple[float, float]] = OrderedDict()

    def available(self, who: Hashable, now: float) -> float:
        """Tokens in ``who``'s bucket at ``now``."""
        tokens, updated = self._buckets.get(who, (self.limit.burst, now))
        return min(self.limit.burst, tokens + max(0.0, now - updated) * self.limit.rate)

    def allow(self, who: Hashable, now: float, cost: float = 1.0) -> bool:
        """Take ``cost`` tokens from ``who``'s bucket if it has them."""
        tokens = self.available(who, now)
        allowed = tokens >= cost
        self._set(who, tokens - cost if allowed else tokens, now)
        return allowed

    def _set(self, who: Hashable, tokens: float, now: float) -> None:
        self._buckets.pop(who, None)
        self._buckets[who] = (tokens, now)
        if len(self._buckets) > self.max_tracked:
            self._buckets.popitem(last=False)
