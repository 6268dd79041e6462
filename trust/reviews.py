"""Peer reviews: who said what about whom, who is believed, and what the believed say together.

Every admitted attestation is one reviewer's (good, bad) counts about one
subject; a newer one from the same reviewer replaces the older. A review is
read as a *rate*, ``good / (good + bad)``, carrying evidence
``min(good + bad, REVIEW_EVIDENCE) / REVIEW_EVIDENCE`` — one reviewer is one
opinion, so it cannot shout by claiming a thousand interactions.

**Credibility** (:meth:`ReviewBoard.recompute`). Global trust cannot tell a
good provider from a good *reviewer*: the EigenTrust paper's spies serve well
and vouch for a collective that does not, and a camouflaged collective serves
honest peers well now and then and praises its own members. So a reviewer is
believed only as far as its reviews agree with what believed reviewers saw
of the same subjects. Belief starts at the *anchors* — bonded validators and
this node itself (its own first-hand results), as EigenTrust starts from its
pre-trusted peers — and spreads from them: each round, a reviewer's
credibility is ``support/(support+1) × max(0, 1 − error/ERROR_LIMIT) ×
service``, where ``error`` is the evidence-weighted mean gap between its
rates and the believed consensus on the same subjects (leaving its own
review out), ``support`` how much believed evidence it was compared against,
and ``service`` falls from 1 to 0 as the believed report the reviewer's own
service falling from GOOD_SERVICE to one half — as in EigenTrust, a bad
provider's opinions carry no weight (the paper's individual malicious peers
praise honest peers too, and would otherwise be believed). A reviewer
nobody believed has seen what it reviews gets nothing (a Sybil swarm
reviewing itself is not heard); one whose reviews contradict the consensus
by more than ERROR_LIMIT, with enough support, is *misleading* — and a peer
that lies about others is treated as one of the colluders it covers for.

**Reported quality** (:meth:`reported`): per subject, the credibility- and
evidence-weighted mean rate of its reviewers, kept current as reviews arrive
(credibility itself changes only at :meth:`recompute`).

Reviewers and subjects are numbered with the global-trust vector's own peer
indices, so everything is a handful of vectorised products.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import numpy as np

from .eigentrust import GlobalTrust

# The most evidence one reviewer's counts can carry.
REVIEW_EVIDENCE = 5.0
# A reviewer whose rates differ from the believed consensus by this much on average has no credibility.
ERROR_LIMIT = 0.5
# Believed evidence a reviewer must have been compared against before it can be called misleading.
MISLEADING_SUPPORT = 1.0
# The believed rate at which a reviewer's own service no longer lessens its credibility.
GOOD_SERVICE = 0.9
# Rounds of spreading belief from the anchors; it settles in a few.
CREDIBILITY_ROUNDS = 6


class ReviewBoard:
    def __init__(self, trust: GlobalTrust):
        self.trust = trust
        self._of: dict[int, dict[int, int]] = {}  # subject -> reviewer -> slot
        self._by: dict[int, dict[int, int]] = {}  # reviewer -> subject -> slot
        # One slot per (reviewer, subject): flat arrays, so recompute is pure numpy.
        self._count = 0
        self._reviewer = np.zeros(64, dtype=np.int64)
        self._subject = np.zeros(64, dtype=np.int64)
        self._counts = np.zeros((64, 2))
        # By peer index: credibility, misleading flag, and per subject the weighted sums behind reported().
        self._credibility = np.zeros(0)
        self._misleading = np.zeros(0, dtype=bool)
        self._rate_sum = np.zeros(0)
        self._weight_sum = np.zeros(0)
        self.changed = False

    # -- reviews -------------------------------------------------------------
    def record(self, reviewer: Hashable, subject: Hashable, good: int, bad: int) -> None:
        if reviewer == subject:
            return
        r, s = self.trust.index_of(reviewer), self.trust.index_of(subject)
        self._fit(max(r, s) + 1)
        slot = self._of.setdefault(s, {}).get(r)
        if slot is None:
            slot = self._new_slot(r, s)
        else:
            self._add_to_sums(slot, -1.0)
        self._counts[slot] = (good, bad)
        self._add_to_sums(slot, 1.0)
        self.changed = True

    def _new_slot(self, r: int, s: int) -> int:
        slot = self._count
        if slot == len(self._reviewer):
            self._reviewer = np.concatenate([self._reviewer, np.zeros(slot, dtype=np.int64)])
            self._subject = np.concatenate([self._subject, np.zeros(slot, dtype=np.int64)])
            self._counts = np.concatenate([self._counts, np.zeros((slot, 2))])
        self._reviewer[slot], self._subject[slot] = r, s
        self._of[s][r] = slot
        self._by.setdefault(r, {})[s] = slot
        self._count += 1
        return slot

    def _fit(self, size: int) -> None:
        """Grow the per-peer arrays to hold index ``size - 1``."""
        if size <= len(self._credibility):
            return
        grown = max(size, 2 * len(self._credibility), 64)
        pad = grown - len(self._credibility)
        self._credibility = np.concatenate([self._credibility, np.zeros(pad)])
        self._misleading = np.concatenate([self._misleading, np.zeros(pad, dtype=bool)])
        self._rate_sum = np.concatenate([self._rate_sum, np.zeros(pad)])
        self._weight_sum = np.concatenate([self._weight_sum, np.zeros(pad)])

    def _add_to_sums(self, slot: int, sign: float) -> None:
        good, bad = self._counts[slot]
        interactions = good + bad
        if interactions <= 0:
            return
        weight = sign * self._credibility[self._reviewer[slot]] * min(interactions, REVIEW_EVIDENCE) / REVIEW_EVIDENCE
        subject = self._subject[slot]
        self._rate_sum[subject] += weight * good / interactions
        self._weight_sum[subject] += weight

    def reviewers(self, subject: Hashable) -> dict[Hashable, tuple[int, int]]:
        s = self.trust.find(subject)
        return {} if s is None else self._pairs(self._of.get(s, {}).items())

    def reviewed_by(self, reviewer: Hashable) -> dict[Hashable, tuple[int, int]]:
        r = self.trust.find(reviewer)
        return {} if r is None else self._pairs(self._by.get(r, {}).items())

    def _pairs(self, slots: Iterable[tuple[int, int]]) -> dict[Hashable, tuple[int, int]]:
        return {self.trust.peer_at(i): (int(self._counts[slot, 0]), int(self._counts[slot, 1])) for i, slot in slots}

    # -- credibility ---------------------------------------------------------
    def recompute(self, anchors: Iterable[Hashable]) -> None:
        """Spread belief from ``anchors`` (validators, this node) over the reviews; refresh the sums."""
        anchor_indices = np.array(sorted({self.trust.index_of(peer) for peer in anchors}), dtype=np.int64)
        self._fit(len(self.trust))
        size = len(self._credibility)
        reviewer, subject = self._reviewer[: self._count], self._subject[: self._count]
        good, bad = self._counts[: self._count, 0], self._counts[: self._count, 1]
        interactions = good + bad
        evidence = np.minimum(interactions, REVIEW_EVIDENCE) / REVIEW_EVIDENCE
        rate = np.divide(good, interactions, out=np.zeros_like(good), where=interactions > 0)
        credibility = np.zeros(size)
        credibility[anchor_indices] = 1.0
        error = support = np.zeros(size)
        for _ in range(CREDIBILITY_ROUNDS):
            weight = credibility[reviewer] * evidence
            rate_sum = _sums(subject, weight * rate, minlength=size)
            weight_sum = _sums(subject, weight, minlength=size)
            # The consensus each review is compared with leaves that review out.
            others = weight_sum[subject] - weight
            compared = others > 1e-12
            consensus = np.divide(rate_sum[subject] - weight * rate, others, out=np.zeros_like(rate), where=compared)
            strength = evidence * np.minimum(others, 1.0) * compared
            support = _sums(reviewer, strength, minlength=size)
            error_sum = _sums(reviewer, strength * np.abs(rate - consensus), minlength=size)
            error = np.divide(error_sum, support, out=np.zeros(size), where=support > 0)
            agreement = np.clip(1.0 - error / ERROR_LIMIT, 0.0, 1.0)
            following = support / (support + 1.0) * agreement * self._service_factor(rate_sum, weight_sum)
            following[anchor_indices] = 1.0
            settled = np.abs(following - credibility).max(initial=0.0) < 1e-3
            credibility = following
            if settled:
                break
        self._credibility = credibility
        self._misleading = (support >= MISLEADING_SUPPORT) & (error > ERROR_LIMIT)
        self._misleading[anchor_indices] = False
        weight = credibility[reviewer] * evidence
        self._rate_sum = _sums(subject, weight * rate, minlength=size)
        self._weight_sum = _sums(subject, weight, minlength=size)
        self.changed = False

    @staticmethod
    def _service_factor(rate_sum: np.ndarray, weight_sum: np.ndarray) -> np.ndarray:
        """1 for a reviewer the believed report serving well (or have not seen serve), 0 for one they
        report serving badly: as in EigenTrust, a bad provider's opinions carry no weight."""
        served = weight_sum > 1e-12
        standing = np.divide(rate_sum, weight_sum, out=np.ones_like(rate_sum), where=served)
        return np.clip((standing - 0.5) / (GOOD_SERVICE - 0.5), 0.0, 1.0)

    def credibility(self, reviewer: Hashable) -> float:
        r = self.trust.find(reviewer)
        return float(self._credibility[r]) if r is not None and r < len(self._credibility) else 0.0

    def is_misleading(self, reviewer: Hashable) -> bool:
        r = self.trust.find(reviewer)
        return r is not None and r < len(self._misleading) and bool(self._misleading[r])

    # -- what the believed say -------------------------------------------------
    def reported(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per peer index (-1: unknown): believed satisfaction 0..1 (0.5 if none), its
        evidence in interactions, and whether the peer itself misleads as a reviewer."""
        inside = (indices >= 0) & (indices < len(self._weight_sum))
        safe = np.where(inside, indices, 0)
        weight = np.where(inside, self._weight_sum[safe], 0.0)
        heard = weight > 1e-12
        satisfaction = np.divide(self._rate_sum[safe], weight, out=np.full(len(indices), 0.5), where=heard)
        misleading = inside & self._misleading[safe]
        return satisfaction, weight * REVIEW_EVIDENCE * heard, misleading


def _sums(indices: np.ndarray, weights: np.ndarray, minlength: int) -> np.ndarray:
    """``np.bincount`` that stays float when there is nothing to count."""
    return np.bincount(indices, weights, minlength=minlength).astype(float, copy=False)
