"""Global trust: EigenTrust (Kamvar, Schlosser, Garcia-Molina, WWW 2003) anchored on stake.

Each truster ``i`` has a local trust row ``c_i`` (non-negative, summing to 1)
over the peers it has dealt with. Global trust is the fixed point of::

    t = (1 - a) * C^T t + a * p

where ``p`` is the pre-trusted distribution — bonded validators, weighted by
stake — and ``a`` the damping. A truster with no row gives its mass to
``p``. Trust reaches a peer only along edges from peers that have trust
themselves, so a clique of identities without stake or history that vouch
for one another gets nothing, however many there are.

:meth:`GlobalTrust.recompute` runs the power iteration from scratch with
vectorised sparse products (numpy). :meth:`GlobalTrust.set_row` and
:meth:`set_stake` then keep the vector current incrementally by *residual
push* (the Gauss–Southwell form of the same iteration): they add the change
to a residual vector and push only entries whose residual exceeds the
tolerance, so a change to one row touches its neighbourhood, not the whole
graph. A ``deferred`` vector skips the pushes and waits for the next
:meth:`recompute` (the simulator recomputes once per cycle, after thousands
of row changes, so pushing each would be wasted work).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Mapping

import numpy as np

DEFAULT_DAMPING = 0.15
# L1 change per iteration at which the full computation stops.
DEFAULT_TOLERANCE = 1e-9
MAX_ITERATIONS = 200
# An incremental update pushes residuals above this (a share of the total trust of 1).
PUSH_TOLERANCE = 1e-6
# Bounds the work of one incremental update; past it, the rest waits for the next update.
MAX_PUSHES = 20_000


class GlobalTrust:
    def __init__(self, damping: float = DEFAULT_DAMPING, deferred: bool = False):
        if not 0.0 < damping < 1.0:
            raise ValueError("damping must be between 0 and 1")
        self.damping = damping
        self.deferred = deferred
        self._index: dict[Hashable, int] = {}
        self._peers: list[Hashable] = []
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._stake: dict[int, float] = {}
        self._trust = np.zeros(0)
        self._residual = np.zeros(0)

    # -- peers -------------------------------------------------------------
    def _id(self, peer: Hashable) -> int:
        index = self._index.get(peer)
        if index is None:
            index = self._index[peer] = len(self._peers)
            self._peers.append(peer)
            if index >= len(self._trust):
                grown = max(16, 2 * len(self._trust))
                self._trust = np.concatenate([self._trust, np.zeros(grown - len(self._trust))])
                self._residual = np.concatenate([self._residual, np.zeros(grown - len(self._residual))])
        return index

    def __len__(self) -> int:
        return len(self._peers)

    def index_of(self, peer: Hashable) -> int:
        """The peer's index in the vector, adding it (with no trust) if new."""
        return self._id(peer)

    def find(self, peer: Hashable) -> int | None:
        return self._index.get(peer)

    def peer_at(self, index: int) -> Hashable:
        return self._peers[index]

    def trust_of_indices(self, indices: np.ndarray) -> np.ndarray:
        return self._trust[indices]

    def trust(self, peer: Hashable) -> float:
        index = self._index.get(peer)
        return 0.0 if index is None else float(self._trust[index])

    def vector(self) -> dict[Hashable, float]:
        return {peer: float(self._trust[i]) for i, peer in enumerate(self._peers)}

    # -- inputs ------------------------------------------------------------
    def _pretrusted(self) -> tuple[np.ndarray, np.ndarray]:
        total = sum(self._stake.values())
        if total <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        indices = np.fromiter(self._stake.keys(), dtype=np.int64, count=len(self._stake))
        weights = np.fromiter(self._stake.values(), dtype=float, count=len(self._stake)) / total
        return indices, weights

    @staticmethod
    def _normalise(row: Mapping[int, float]) -> tuple[np.ndarray, np.ndarray]:
        kept = {j: v for j, v in row.items() if v > 0 and math.isfinite(v)}
        total = sum(kept.values())
        if total <= 0:
            return np.zeros(0, dtype=np.int64), np.zeros(0)
        indices = np.fromiter(kept.keys(), dtype=np.int64, count=len(kept))
        weights = np.fromiter(kept.values(), dtype=float, count=len(kept)) / total
        return indices, weights

    def set_stake(self, stakes: Mapping[Hashable, float]) -> None:
        """Replace the pre-trusted set: peers with positive bonded stake."""
        old_indices, old_weights = self._pretrusted()
        self._stake = {self._id(peer): float(s) for peer, s in stakes.items() if s > 0 and math.isfinite(s)}
        if self.deferred:
            return
        new_indices, new_weights = self._pretrusted()
        self._residual[old_indices] -= self.damping * old_weights
        self._residual[new_indices] += self.damping * new_weights
        # Trusters without a row hand their mass to p: that share moves with p too.
        dangling = self._dangling_mass()
        self._residual[old_indices] -= (1 - self.damping) * dangling * old_weights
        self._residual[new_indices] += (1 - self.damping) * dangling * new_weights
        self._push()

    def set_row(self, truster: Hashable, row: Mapping[Hashable, float]) -> None:
        """Replace ``truster``'s local trust (any non-negative weights; normalised here)."""
        i = self._id(truster)
        new = self._normalise({self._id(peer): value for peer, value in row.items() if peer != truster})
        if self.deferred:
            if len(new[0]):
                self._rows[i] = new
            else:
                self._rows.pop(i, None)
            return
        old = self._rows.get(i)
        mass = (1 - self.damping) * self._trust[i]
        p_indices, p_weights = self._pretrusted()
        if old is None:
            self._residual[p_indices] -= mass * p_weights
        else:
            self._residual[old[0]] -= mass * old[1]
        if len(new[0]):
            self._rows[i] = new
            self._residual[new[0]] += mass * new[1]
        else:
            self._rows.pop(i, None)
            self._residual[p_indices] += mass * p_weights
        self._push()

    def row(self, truster: Hashable) -> dict[Hashable, float]:
        index = self._index.get(truster)
        row = None if index is None else self._rows.get(index)
        if row is None:
            return {}
        return {self._peers[j]: w for j, w in zip(row[0].tolist(), row[1].tolist())}

    def _dangling_mass(self) -> float:
        n = len(self._peers)
        with_rows = np.fromiter(self._rows.keys(), dtype=np.int64, count=len(self._rows))
        return float(self._trust[:n].sum() - self._trust[with_rows].sum())

    # -- computation -------------------------------------------------------
    def _edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self._rows:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0)
        sources = np.concatenate([np.full(len(dst), i, dtype=np.int64) for i, (dst, _) in self._rows.items()])
        targets = np.concatenate([dst for dst, _ in self._rows.values()])
        weights = np.concatenate([w for _, w in self._rows.values()])
        return sources, targets, weights

    def _step(self, trust: np.ndarray, edges, has_row: np.ndarray, p: np.ndarray) -> np.ndarray:
        sources, targets, weights = edges
        n = len(trust)
        spread = np.bincount(targets, weights=weights * trust[sources], minlength=n)
        dangling = trust.sum() - trust[has_row].sum()
        return (1 - self.damping) * (spread + dangling * p) + self.damping * p

    def recompute(self) -> int:
        """Power iteration from ``p``; returns the iterations taken."""
        n = len(self._peers)
        p = np.zeros(n)
        p_indices, p_weights = self._pretrusted()
        p[p_indices] = p_weights
        edges = self._edges()
        has_row = np.fromiter(self._rows.keys(), dtype=np.int64, count=len(self._rows))
        trust = p.copy()
        iterations = 0
        for iterations in range(1, MAX_ITERATIONS + 1):
            following = self._step(trust, edges, has_row, p)
            change = float(np.abs(following - trust).sum())
            trust = following
            if change < DEFAULT_TOLERANCE:
                break
        self._trust[:] = 0.0
        self._trust[:n] = trust
        residual = self._step(trust, edges, has_row, p) - trust
        self._residual[:] = 0.0
        self._residual[:n] = residual
        return iterations

    def _push(self) -> None:
        """Move residual mass into the trust vector along the rows, until small."""
        p_indices, p_weights = self._pretrusted()
        keep = 1 - self.damping
        pushes = 0
        while pushes < MAX_PUSHES:
            active = np.flatnonzero(np.abs(self._residual) > PUSH_TOLERANCE)
            if not len(active):
                return
            for j in active.tolist():
                amount = self._residual[j]
                self._residual[j] = 0.0
                self._trust[j] += amount
                row = self._rows.get(j)
                if row is None:
                    self._residual[p_indices] += keep * amount * p_weights
                else:
                    self._residual[row[0]] += keep * amount * row[1]
                pushes += 1
                if pushes >= MAX_PUSHES:
                    return

    def peers(self) -> Iterable[Hashable]:
        return iter(self._peers)
