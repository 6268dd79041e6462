"""The local score: the mission's weighted formula, decay, and uncertainty for strangers."""

import math

import pytest

from hypermesh.trust.score import (
    CONFIDENCE_EVIDENCE,
    DEFAULT_HALF_LIFE,
    DEFAULT_WEIGHTS,
    LONGEVITY_HORIZON,
    DecayingTally,
    Dimension,
    PeerEvidence,
    validate_weights,
)


def test_default_weights_are_the_missions_formula():
    assert DEFAULT_WEIGHTS == {
        Dimension.PERFORMANCE: 0.35,
        Dimension.SPEED: 0.20,
        Dimension.UPTIME: 0.15,
        Dimension.SECURITY: 0.15,
        Dimension.PEER_REVIEW: 0.10,
        Dimension.LONGEVITY: 0.05,
    }
    assert math.isclose(sum(DEFAULT_WEIGHTS.values()), 1.0)


def test_score_is_the_weighted_sum_of_dimension_values():
    evidence = PeerEvidence(first_seen=0.0)
    now = LONGEVITY_HORIZON  # full longevity
    evidence.add(Dimension.PERFORMANCE, now, DEFAULT_HALF_LIFE, good=8)  # (8+1)/(8+2) = 0.9
    evidence.add(Dimension.SPEED, now, DEFAULT_HALF_LIFE, bad=3)  # 1/5 = 0.2
    reputation = evidence.reputation(now, DEFAULT_WEIGHTS, DEFAULT_HALF_LIFE)
    expected = 100 * (0.35 * 0.9 + 0.20 * 0.2 + 0.15 * 0.5 + 0.15 * 0.5 + 0.10 * 0.5 + 0.05 * 1.0)
    assert reputation.score == pytest.approx(expected)
    assert reputation.components[Dimension.PERFORMANCE] == pytest.approx(0.9)


def test_a_stranger_is_uncertain_not_average():
    reputation = PeerEvidence(first_seen=0.0).reputation(0.0, DEFAULT_WEIGHTS, DEFAULT_HALF_LIFE)
    assert reputation.confidence == 0.0
    assert reputation.pessimistic() == 0.0
    assert reputation.score == pytest.approx(47.5)  # the uniform prior's 0.5 everywhere but longevity


def test_confidence_grows_with_evidence():
    evidence = PeerEvidence(first_seen=0.0)
    previous = 0.0
    for step in range(1, 6):
        evidence.add(Dimension.PERFORMANCE, 0.0, DEFAULT_HALF_LIFE, good=1)
        confidence = evidence.reputation(0.0, DEFAULT_WEIGHTS, DEFAULT_HALF_LIFE).confidence
        assert confidence > previous
        previous = confidence
    assert previous < 1.0


def test_evidence_halves_every_half_life():
    tally = DecayingTally(at=0.0)
    tally.add(0.0, 100.0, good=8.0, bad=4.0)
    assert tally.decayed(100.0, 100.0) == pytest.approx((4.0, 2.0))
    assert tally.decayed(300.0, 100.0) == pytest.approx((1.0, 0.5))


def test_old_bad_behaviour_fades_and_fresh_good_behaviour_restores_the_score():
    evidence = PeerEvidence(first_seen=0.0)
    evidence.add(Dimension.PERFORMANCE, 0.0, DEFAULT_HALF_LIFE, bad=20)
    low = evidence.reputation(0.0, DEFAULT_WEIGHTS, DEFAULT_HALF_LIFE).components[Dimension.PERFORMANCE]
    later = 8 * DEFAULT_HALF_LIFE
    evidence.add(Dimension.PERFORMANCE, later, DEFAULT_HALF_LIFE, good=10)
    high = evidence.reputation(later, DEFAULT_WEIGHTS, DEFAULT_HALF_LIFE).components[Dimension.PERFORMANCE]
    assert low < 0.1 and high > 0.85


def test_negative_or_non_finite_evidence_is_refused():
    tally = DecayingTally()
    with pytest.raises(ValueError):
        tally.add(0.0, 1.0, good=-1)
    with pytest.raises(ValueError):
        tally.add(0.0, 1.0, bad=math.nan)


def test_longevity_is_derived_not_observed():
    with pytest.raises(ValueError, match="longevity"):
        PeerEvidence(0.0).add(Dimension.LONGEVITY, 0.0, DEFAULT_HALF_LIFE, good=1)


@pytest.mark.parametrize(
    "change, message",
    [
        ({Dimension.SPEED: 0.3}, "sum to 1"),
        ({Dimension.SPEED: -0.2, Dimension.PERFORMANCE: 0.75}, "non-negative"),
    ],
)
def test_bad_weights_are_refused_with_the_reason(change, message):
    weights = dict(DEFAULT_WEIGHTS) | change
    with pytest.raises(ValueError, match=message):
        validate_weights(weights)


def test_confidence_constant_means_half_certain():
    evidence = PeerEvidence(first_seen=0.0)
    evidence.add(Dimension.PERFORMANCE, 0.0, DEFAULT_HALF_LIFE, good=CONFIDENCE_EVIDENCE)
    only_performance = {d: (1.0 if d is Dimension.PERFORMANCE else 0.0) for d in Dimension}
    assert evidence.reputation(0.0, only_performance, DEFAULT_HALF_LIFE).confidence == pytest.approx(0.5)
