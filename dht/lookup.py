"""The iterative Kademlia lookup as a sans-IO state machine.

A :class:`Lookup` is fed responses, failures and the current time, and says
which peers to query next; it never sends anything or reads a clock. At most
``alpha`` queries are in flight (spread over the paths), each with its own
deadline. The lookup ends when the ``result_size`` closest peers it knows
that have not failed have all answered; an operation may end it sooner, for
example once the β closest have (:meth:`Lookup.settled`).

Stragglers (the Kademlia paper, §2.3: "nodes that fail to respond quickly
are removed from consideration until and unless they do respond"): a query
the caller marks slow (:meth:`Lookup.mark_slow`) gives up its place among the
``alpha`` in flight, so the next candidate is asked, and no longer holds up
:meth:`Lookup.settled`. It still counts as asked: its answer is taken if it
comes, and the lookup is not :attr:`Lookup.done` while it is outstanding
among the closest. At most ``alpha`` per path are forgiven at a time, so a
network where everyone is slow is not flooded.

Disjoint paths (S/Kademlia, Baumgart & Mies 2007): with ``paths = d > 1`` the
seeds are dealt round-robin to d paths, and every peer belongs to the path
that first heard of it, so no peer is queried on two paths. An attacker must
then sit on every path to hide a value or a provider from us, instead of
answering one query with only its own sybils.
"""

from __future__ import annotations

import bisect
import enum
import math
from dataclasses import dataclass

from hypermesh.transport.identity import PeerId

from .messages import PeerInfo


class QueryState(enum.Enum):
    NOT_QUERIED = 0
    WAITING = 1
    SUCCEEDED = 2
    FAILED = 3


@dataclass(slots=True)
class Candidate:
    info: PeerInfo
    key: int
    distance: int
    # 1 for a seed from our own table, the discoverer's hops + 1 otherwise:
    # the number of sequential round trips needed to reach this peer.
    hops: int
    path: int
    state: QueryState = QueryState.NOT_QUERIED
    deadline: float = math.inf
    # Waiting, but past the caller's straggler threshold (see mark_slow).
    slow: bool = False

    @property
    def straggling(self) -> bool:
        return self.slow and self.state is QueryState.WAITING


@dataclass(frozen=True, slots=True)
class LookupConfig:
    alpha: int = 3
    result_size: int = 20
    query_timeout: float = 10.0
    paths: int = 1


class Lookup:
    def __init__(
        self,
        target: int,
        seeds: list[tuple[PeerInfo, int]],
        config: LookupConfig,
        local_peer: PeerId | None = None,
    ):
        """``seeds`` are (peer, keyspace key) pairs, typically from our routing table."""
        self.target = target
        self.config = config
        self.local_peer = local_peer
        self.paths = max(1, min(config.paths, len(seeds) or 1))
        self.per_path_parallelism = max(1, math.ceil(config.alpha / self.paths))
        self._candidates: dict[PeerId, Candidate] = {}
        # Per path: sorted distances and the candidates in the same order.
        self._order: list[list[tuple[int, PeerId]]] = [[] for _ in range(self.paths)]
        self._in_flight = [0] * self.paths  # not counting stragglers
        self._straggling = [0] * self.paths
        self.queries_sent = 0
        self.finished = False
        for position, (info, key) in enumerate(seeds):
            self._add(info, key, hops=1, path=position % self.paths)

    def _add(self, info: PeerInfo, key: int, hops: int, path: int) -> None:
        if info.peer_id in self._candidates or info.peer_id == self.local_peer:
            return
        distance = key ^ self.target
        self._candidates[info.peer_id] = Candidate(info, key, distance, hops, path)
        bisect.insort(self._order[path], (distance, info.peer_id))

    def candidate(self, peer_id: PeerId) -> Candidate | None:
        return self._candidates.get(peer_id)

    def _window(self, path: int, skip_stragglers: bool = True):
        """The first ``result_size`` candidates of a path that have not failed
        (nor, with ``skip_stragglers``, are straggling)."""
        taken = 0
        for _, peer_id in self._order[path]:
            candidate = self._candidates[peer_id]
            if candidate.state is QueryState.FAILED or (skip_stragglers and candidate.straggling):
                continue
            yield candidate
            taken += 1
            if taken >= self.config.result_size:
                return

    def next_queries(self, now: float) -> list[PeerInfo]:
        """Peers to query now; they are marked in flight with a deadline."""
        if self.finished:
            return []
        chosen = []
        for path in range(self.paths):
            free = self.per_path_parallelism - self._in_flight[path]
            if free <= 0:
                continue
            for candidate in self._window(path):
                if candidate.state is QueryState.NOT_QUERIED:
                    candidate.state = QueryState.WAITING
                    candidate.deadline = now + self.config.query_timeout
                    self._in_flight[path] += 1
                    self.queries_sent += 1
                    chosen.append(candidate.info)
                    free -= 1
                    if free == 0:
                        break
        return chosen

    def on_response(self, peer_id: PeerId, closer: list[tuple[PeerInfo, int]], now: float) -> bool:
        """``peer_id`` answered with ``closer`` (peer, key) pairs.

        Returns False for an answer we are not waiting for (late, after a
        timeout, or unsolicited), which is then ignored.
        """
        candidate = self._candidates.get(peer_id)
        if candidate is None or candidate.state is not QueryState.WAITING:
            return False
        self._settle(candidate, QueryState.SUCCEEDED)
        for info, key in closer:
            self._add(info, key, candidate.hops + 1, candidate.path)
        return True

    def on_failure(self, peer_id: PeerId, now: float) -> None:
        candidate = self._candidates.get(peer_id)
        if candidate is None or candidate.state is not QueryState.WAITING:
            return
        self._settle(candidate, QueryState.FAILED)

    def _settle(self, candidate: Candidate, state: QueryState) -> None:
        if candidate.slow:
            self._straggling[candidate.path] -= 1
        else:
            self._in_flight[candidate.path] -= 1
        candidate.state = state

    def mark_slow(self, peer_id: PeerId) -> bool:
        """The query to ``peer_id`` is taking too long: stop waiting on it to
        go on (its answer is still taken). False if it is not waiting, or its
        path already forgives ``alpha`` stragglers."""
        candidate = self._candidates.get(peer_id)
        if candidate is None or candidate.state is not QueryState.WAITING or candidate.slow or self.finished:
            return False
        if self._straggling[candidate.path] >= self.per_path_parallelism:
            return False
        candidate.slow = True
        self._in_flight[candidate.path] -= 1
        self._straggling[candidate.path] += 1
        return True

    def get_timer(self) -> float | None:
        deadlines = [c.deadline for c in self._candidates.values() if c.state is QueryState.WAITING]
        return min(deadlines) if deadlines and not self.finished else None

    def handle_timer(self, now: float) -> list[PeerId]:
        """Fail the queries whose deadline passed; returns their peers."""
        expired = [
            c.info.peer_id
            for c in self._candidates.values()
            if c.state is QueryState.WAITING and c.deadline <= now
        ]
        for peer_id in expired:
            self.on_failure(peer_id, now)
        return expired

    def in_flight(self) -> int:
        """Queries awaiting an answer, stragglers included."""
        return sum(self._in_flight) + sum(self._straggling)

    @property
    def done(self) -> bool:
        """Every one of the closest has answered or failed. A straggler among
        them is waited for (to its deadline): one that has found nothing must
        not end without its closest peers' answers."""
        if self.finished:
            return True
        for path in range(self.paths):
            if self._in_flight[path]:
                return False
            for candidate in self._window(path):
                if candidate.state is QueryState.NOT_QUERIED:
                    return False
            if self._straggling[path] and any(c.straggling for c in self._window(path, skip_stragglers=False)):
                return False
        return True

    def settled(self, count: int) -> bool:
        """Whether the ``count`` closest peers known on every path that have
        not failed have all answered: go-libp2p-kad-dht's termination (its
        resiliency β), whatever is still in flight to farther peers. A
        straggler is out of consideration until it answers."""
        for path in range(self.paths):
            for place, candidate in enumerate(self._window(path)):
                if place >= count:
                    break
                if candidate.state is not QueryState.SUCCEEDED:  # not asked yet, or no answer yet
                    return False
        return True

    def finish(self) -> None:
        """Stop early, e.g. when enough providers or values were found."""
        self.finished = True

    def closest_succeeded(self, count: int | None = None) -> list[Candidate]:
        """The closest peers that answered, across all paths."""
        count = self.config.result_size if count is None else count
        answered = [c for c in self._candidates.values() if c.state is QueryState.SUCCEEDED]
        answered.sort(key=lambda c: c.distance)
        return answered[:count]

    def failed_peers(self) -> list[PeerId]:
        return [p for p, c in self._candidates.items() if c.state is QueryState.FAILED]


class StragglerThreshold:
    """When a query counts as slow: TCP's retransmission timeout (RFC 6298,
    smoothed round trip plus four deviations) over the answers this node has
    had, within [``floor``, ``ceiling``]. The floor keeps scheduling noise on
    a quiet network from making every query a straggler; before any answer,
    ``initial`` (RFC 6298's 1 s)."""

    def __init__(self, floor: float, ceiling: float, initial: float = 1.0):
        self.floor = floor
        self.ceiling = ceiling
        self.initial = initial
        self.smoothed: float | None = None
        self.deviation = 0.0

    def observe(self, round_trip: float) -> None:
        round_trip = max(0.0, round_trip)
        if self.smoothed is None:
            self.smoothed, self.deviation = round_trip, round_trip / 2
        else:
            self.deviation = 0.75 * self.deviation + 0.25 * abs(self.smoothed - round_trip)
            self.smoothed = 0.875 * self.smoothed + 0.125 * round_trip

    @property
    def seconds(self) -> float:
        estimate = self.initial if self.smoothed is None else self.smoothed + 4 * self.deviation
        return min(self.ceiling, max(self.floor, estimate))
