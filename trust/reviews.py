"""Peer reviews: who said what about whom, and what the credible ones say together.

Every admitted attestation is one reviewer's (good, bad) counts about one
subject; a newer one from the same reviewer replaces the older. The board
answers the question ranking needs: *how well does this subject serve,
according to the reviewers this node listens to?* (the engine decides whom:
bonded validators and peers that served it well, less any caught misleading
it). Each reviewer is one opinion — its counts are scaled to at most
REVIEW_EVIDENCE — so a reviewer cannot shout, and a swarm of fresh
identities reviewing one another is not heard at all.

Reviewers are numbered with the global-trust vector's own peer indices so
that the weighting is one vectorised product per subject.
"""

from __future__ import annotations

from collections.abc import Hashable

import numpy as np

from .eigentrust import GlobalTrust

# The most evidence one reviewer's counts can carry.
REVIEW_EVIDENCE = 5.0


class ReviewBoard:
    def __init__(self, trust: GlobalTrust):
        self.trust = trust
        self._of: dict[int, dict[int, tuple[int, int]]] = {}
        self._by: dict[int, dict[int, tuple[int, int]]] = {}
        # Per subject: reviewer indices, scaled evidence, satisfaction; rebuilt after a change.
        self._arrays: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def record(self, reviewer: Hashable, subject: Hashable, good: int, bad: int) -> None:
        if reviewer == subject:
            return
        r, s = self.trust.index_of(reviewer), self.trust.index_of(subject)
        self._of.setdefault(s, {})[r] = (good, bad)
        self._by.setdefault(r, {})[s] = (good, bad)
        self._arrays.pop(s, None)

    def reviewers(self, subject: Hashable) -> dict[Hashable, tuple[int, int]]:
        s = self.trust.find(subject)
        return {} if s is None else {self.trust.peer_at(r): v for r, v in self._of.get(s, {}).items()}

    def reviewed_by(self, reviewer: Hashable) -> dict[Hashable, tuple[int, int]]:
        r = self.trust.find(reviewer)
        return {} if r is None else {self.trust.peer_at(s): v for s, v in self._by.get(r, {}).items()}

    def _subject_arrays(self, s: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        arrays = self._arrays.get(s)
        if arrays is None:
            reviews = self._of.get(s, {})
            reviewers = np.fromiter(reviews.keys(), dtype=np.int64, count=len(reviews))
            counts = np.array(list(reviews.values()), dtype=float).reshape(-1, 2)
            interactions = counts.sum(axis=1)
            evidence = np.minimum(interactions, REVIEW_EVIDENCE)
            satisfaction = (counts[:, 0] + 1.0) / (interactions + 2.0)
            arrays = self._arrays[s] = (reviewers, evidence, satisfaction)
        return arrays

    def quality(self, subject: Hashable, heard: np.ndarray) -> tuple[float, float]:
        """(satisfaction 0..1, evidence) from the reviewers the ``heard`` mask selects.

        ``heard`` is indexed like the global-trust vector; reviewers past its
        end are not heard.
        """
        s = self.trust.find(subject)
        if s is None or s not in self._of or not len(heard):
            return 0.5, 0.0
        reviewers, evidence, satisfaction = self._subject_arrays(s)
        inside = reviewers < len(heard)
        weight = evidence * (inside & heard[np.where(inside, reviewers, 0)])
        total = float(weight.sum())
        if total <= 0:
            return 0.5, 0.0
        return float((weight * satisfaction).sum() / total), total
