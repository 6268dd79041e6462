"""Local reputation: what this node has seen a peer do, as a 0–100 score.

Evidence is kept per peer and per dimension as a pair of exponentially
decayed tallies (good, bad), so old behaviour fades with a half-life instead
of counting for ever. A dimension's value is the mean of a Beta posterior
with a uniform prior, ``(good + 1) / (good + bad + 2)``, and its confidence
grows with the amount of evidence, ``n / (n + CONFIDENCE_EVIDENCE)``. A peer
we know nothing about is therefore *uncertain* (confidence 0), not average:
callers that rank peers use :meth:`Reputation.pessimistic`, which pulls an
uncertain score towards zero.

The six dimensions and their default weights are the mission's formula::

    performance 0.35, speed 0.20, uptime 0.15, security 0.15,
    peer review 0.10, longevity 0.05

Nothing here reads a clock: every call takes ``now`` (seconds).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass


class Dimension(enum.Enum):
    PERFORMANCE = "performance"
    SPEED = "speed"
    UPTIME = "uptime"
    SECURITY = "security"
    PEER_REVIEW = "peer_review"
    LONGEVITY = "longevity"


DEFAULT_WEIGHTS: dict[Dimension, float] = {
    Dimension.PERFORMANCE: 0.35,
    Dimension.SPEED: 0.20,
    Dimension.UPTIME: 0.15,
    Dimension.SECURITY: 0.15,
    Dimension.PEER_REVIEW: 0.10,
    Dimension.LONGEVITY: 0.05,
}

# Evidence halves every week: a peer's behaviour a month ago weighs 1/16 of today's.
DEFAULT_HALF_LIFE = 7 * 24 * 3600.0
# With this much (decayed) evidence a dimension is half certain.
CONFIDENCE_EVIDENCE = 5.0
# A peer known for this long scores full longevity.
LONGEVITY_HORIZON = 30 * 24 * 3600.0


def validate_weights(weights: dict[Dimension, float]) -> dict[Dimension, float]:
    """Weights for every dimension, non-negative, summing to 1 (within rounding)."""
    missing = set(Dimension) - set(weights)
    if missing:
        raise ValueError("weights missing for " + ", ".join(sorted(d.value for d in missing)))
    for dimension, weight in weights.items():
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(f"weight for {dimension.value} must be a non-negative number, not {weight!r}")
    total = sum(weights.values())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"weights must sum to 1, not {total:.6g}")
    return dict(weights)


@dataclass(slots=True)
class DecayingTally:
    """Good and bad evidence, both decayed by ``2 ** (-age / half_life)``."""

    good: float = 0.0
    bad: float = 0.0
    at: float = 0.0

    def decayed(self, now: float, half_life: float) -> tuple[float, float]:
        age = max(0.0, now - self.at)
        factor = 0.5 ** (age / half_life)
        return self.good * factor, self.bad * factor

    def add(self, now: float, half_life: float, good: float = 0.0, bad: float = 0.0) -> None:
        if good < 0 or bad < 0 or not (math.isfinite(good) and math.isfinite(bad)):
            raise ValueError("evidence amounts must be finite and non-negative")
        current_good, current_bad = self.decayed(now, half_life)
        self.good = current_good + good
        self.bad = current_bad + bad
        self.at = max(self.at, now)


def beta_mean(good: float, bad: float) -> float:
    return (good + 1.0) / (good + bad + 2.0)


def confidence_of(evidence: float) -> float:
    return evidence / (evidence + CONFIDENCE_EVIDENCE)


@dataclass(frozen=True, slots=True)
class Reputation:
    """A peer's 0–100 score and how sure we are of it (0 = nothing seen)."""

    score: float
    confidence: float
    components: dict[Dimension, float]

    def pessimistic(self) -> float:
        """The score pulled towards 0 by uncertainty: what ranking uses."""
        return self.score * self.confidence


class PeerEvidence:
    """Everything this node has observed of one peer."""

    __slots__ = ("tallies", "first_seen")

    def __init__(self, first_seen: float):
        self.tallies: dict[Dimension, DecayingTally] = {}
        self.first_seen = first_seen

    def add(self, dimension: Dimension, now: float, half_life: float, good: float = 0.0, bad: float = 0.0) -> None:
        if dimension is Dimension.LONGEVITY:
            raise ValueError("longevity is derived from first_seen, not observed")
        tally = self.tallies.get(dimension)
        if tally is None:
            tally = self.tallies[dimension] = DecayingTally(at=now)
        tally.add(now, half_life, good, bad)

    def counts(self, dimension: Dimension, now: float, half_life: float) -> tuple[float, float]:
        tally = self.tallies.get(dimension)
        return (0.0, 0.0) if tally is None else tally.decayed(now, half_life)

    def reputation(self, now: float, weights: dict[Dimension, float], half_life: float) -> Reputation:
        components: dict[Dimension, float] = {}
        evidence_total = 0.0
        for dimension in Dimension:
            if dimension is Dimension.LONGEVITY:
                continue
            good, bad = self.counts(dimension, now, half_life)
            components[dimension] = beta_mean(good, bad)
            evidence_total += (good + bad) * weights[dimension]
        components[Dimension.LONGEVITY] = min(1.0, max(0.0, now - self.first_seen) / LONGEVITY_HORIZON)
        score = 100.0 * sum(weights[d] * value for d, value in components.items())
        # Longevity is not evidence of behaviour: it does not raise confidence.
        observed_weight = 1.0 - weights[Dimension.LONGEVITY]
        evidence = evidence_total / observed_weight if observed_weight > 0 else 0.0
        return Reputation(score=score, confidence=confidence_of(evidence), components=components)
