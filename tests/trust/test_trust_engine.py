"""The trust engine: observations, reviews, the +15 vouch bound, shunning and ranking."""

import random

import pytest

from hypermesh.transport.identity import Identity
from hypermesh.trust.attestation import AttestationError, sign_attestation
from hypermesh.trust.engine import (
    MAX_VOUCH_BOOST,
    Observation,
    Proof,
    Ranked,
    SelectionPolicy,
    TrustConfig,
    TrustEngine,
    choose,
)
from hypermesh.trust.score import Dimension, Reputation

NOW = 1_800_000_000.0
ME = Identity.from_seed(b"me")
VALIDATOR = Identity.from_seed(b"validator")
STRANGER = Identity.from_seed(b"stranger")
PROVIDER = Identity.from_seed(b"provider").peer_id
OTHER = Identity.from_seed(b"other").peer_id


def engine():
    return TrustEngine(ME.peer_id)


def vouch(issuer, subject, good=50, bad=0, sequence=1):
    return sign_attestation(issuer, subject, good, bad, int(NOW * 1000), sequence)


def test_observations_move_the_matching_dimension():
    trust = engine()
    for _ in range(10):
        trust.observe(PROVIDER, Observation.RECEIPT_VERIFIED, NOW)
        trust.observe(OTHER, Observation.RUN_TIMEOUT, NOW)
    good = trust.reputation(PROVIDER, NOW).components[Dimension.PERFORMANCE]
    bad = trust.reputation(OTHER, NOW).components[Dimension.PERFORMANCE]
    assert good > 0.9 > 0.1 > bad
    assert trust.score(PROVIDER, NOW) > trust.score(OTHER, NOW)


def test_reviews_from_peers_without_stake_or_history_carry_no_weight():
    trust = engine()
    trust.accept_attestation(vouch(STRANGER, PROVIDER, good=1000), STRANGER.peer_id, NOW)
    assert trust.reputation(PROVIDER, NOW).components[Dimension.PEER_REVIEW] == 0.5
    trust.set_stake({VALIDATOR.peer_id: 10.0})
    trust.accept_attestation(vouch(VALIDATOR, PROVIDER, good=20), VALIDATOR.peer_id, NOW)
    assert trust.reputation(PROVIDER, NOW).components[Dimension.PEER_REVIEW] > 0.8


def test_a_trusted_voucher_lends_at_most_fifteen_points():
    trust = engine()
    voucher = VALIDATOR
    for _ in range(200):
        for observation in (Observation.RECEIPT_VERIFIED, Observation.ON_TIME, Observation.PROBE_UP, Observation.CLEAN_SESSION):
            trust.observe(voucher.peer_id, observation, NOW)
    trust.observe(PROVIDER, Observation.RUN_TIMEOUT, NOW)
    before = trust.reputation(PROVIDER, NOW).score
    trust.accept_attestation(vouch(voucher, PROVIDER, good=10**6), voucher.peer_id, NOW)
    boost = trust.vouch_boost(PROVIDER, NOW)
    assert 0 < boost <= MAX_VOUCH_BOOST
    assert trust.score(PROVIDER, NOW) <= trust.reputation(PROVIDER, NOW).score + MAX_VOUCH_BOOST
    assert trust.score(PROVIDER, NOW) > before


def test_an_untrusted_voucher_lends_nothing():
    trust = engine()
    trust.accept_attestation(vouch(STRANGER, PROVIDER), STRANGER.peer_id, NOW)
    assert trust.vouch_boost(PROVIDER, NOW) == 0.0


def test_attestations_about_this_node_are_refused():
    trust = engine()
    with pytest.raises(AttestationError, match="about this node"):
        trust.accept_attestation(vouch(STRANGER, ME.peer_id), STRANGER.peer_id, NOW)


def test_proof_shuns_at_once_and_the_shun_expires():
    trust = TrustEngine(ME.peer_id, TrustConfig(shun_seconds=3600))
    for _ in range(20):
        trust.observe(PROVIDER, Observation.RECEIPT_VERIFIED, NOW)
    trust.prove(PROVIDER, Proof.FORGED_RECEIPT, NOW, "receipt signature by another key")
    assert trust.is_shunned(PROVIDER, NOW)
    assert trust.score(PROVIDER, NOW) == 0.0
    assert "forged_receipt" in trust.shunned(NOW)[PROVIDER].reason
    assert PROVIDER not in [r.peer for r in trust.rank([PROVIDER, OTHER], NOW)]
    assert not trust.is_shunned(PROVIDER, NOW + 3600)


def test_after_a_shun_only_fresh_good_behaviour_restores_the_peer():
    trust = TrustEngine(ME.peer_id, TrustConfig(shun_seconds=3600))
    trust.prove(PROVIDER, Proof.PROVEN_WRONG_OUTPUT, NOW)
    after_expiry = NOW + 3600
    penalised = trust.reputation(PROVIDER, after_expiry).components[Dimension.PERFORMANCE]
    assert penalised < 0.05
    for _ in range(200):
        trust.observe(PROVIDER, Observation.RECEIPT_VERIFIED, after_expiry)
    assert trust.reputation(PROVIDER, after_expiry).components[Dimension.PERFORMANCE] > 0.75


def test_unshun_lifts_a_manual_shun():
    trust = engine()
    trust.shun(PROVIDER, "operator said so", NOW)
    assert trust.is_shunned(PROVIDER, NOW)
    assert trust.unshun(PROVIDER)
    assert not trust.is_shunned(PROVIDER, NOW)
    assert not trust.unshun(PROVIDER)


def test_rank_puts_first_hand_good_service_first_and_overrules_hearsay():
    trust = engine()
    trust.set_stake({VALIDATOR.peer_id: 1.0})
    # The validator vouches for OTHER, but OTHER failed us twice.
    trust.accept_attestation(vouch(VALIDATOR, OTHER), VALIDATOR.peer_id, NOW)
    trust.recompute(NOW)
    trust.observe(OTHER, Observation.RUN_TIMEOUT, NOW)
    trust.observe(OTHER, Observation.RUN_TIMEOUT, NOW)
    for _ in range(3):
        trust.observe(PROVIDER, Observation.RECEIPT_VERIFIED, NOW)
    trust.recompute(NOW)
    ranked = trust.rank([OTHER, PROVIDER], NOW)
    assert [r.peer for r in ranked] == [PROVIDER, OTHER]


def test_choose_sends_most_tasks_to_the_best_and_few_to_strangers():
    trust = engine()
    trust.set_stake({VALIDATOR.peer_id: 1.0})
    good = [Identity.from_seed(bytes([i])).peer_id for i in range(5)]
    strangers = [Identity.from_seed(b"s" + bytes([i])).peer_id for i in range(50)]
    for peer in good:
        for _ in range(5):
            trust.observe(peer, Observation.RECEIPT_VERIFIED, NOW)
    trust.recompute(NOW)
    rng = random.Random(1)
    picks = [trust.choose(good + strangers, NOW, rng) for _ in range(2000)]
    to_strangers = sum(p in strangers for p in picks) / len(picks)
    assert to_strangers <= trust.config.policy.newcomers * 2
    assert picks.count(trust.rank(good, NOW)[0].peer) / len(picks) > 0.9


def test_observations_about_oneself_are_ignored():
    trust = engine()
    trust.observe(ME.peer_id, Observation.RECEIPT_VERIFIED, NOW)
    trust.prove(ME.peer_id, Proof.EQUIVOCATION, NOW)
    assert trust.known_peers() == [] and not trust.is_shunned(ME.peer_id, NOW)


def test_a_peer_that_misleads_as_a_reviewer_is_ranked_with_the_cheats_it_covers_for():
    # The EigenTrust paper's spy: it serves us well, and praises a cheat the validator caught.
    spy, cheat = Identity.from_seed(b"spy"), Identity.from_seed(b"cheat").peer_id
    trust = engine()
    trust.set_stake({VALIDATOR.peer_id: 1.0})
    trust.accept_attestation(vouch(VALIDATOR, cheat, good=0, bad=5), VALIDATOR.peer_id, NOW)
    trust.accept_attestation(vouch(spy, cheat, good=1000), spy.peer_id, NOW)
    for _ in range(3):
        trust.observe(spy.peer_id, Observation.RECEIPT_VERIFIED, NOW)
        trust.observe(PROVIDER, Observation.RECEIPT_VERIFIED, NOW)
    trust.recompute(NOW)
    assert trust.reviews.is_misleading(spy.peer_id)
    ranked = {r.peer: r for r in trust.rank([spy.peer_id, PROVIDER, cheat], NOW)}
    assert ranked[PROVIDER].trusted
    assert ranked[spy.peer_id].failed and not ranked[spy.peer_id].trusted
    assert ranked[cheat].failed  # unknown to us, reported bad by the validator
    assert trust.choose([spy.peer_id, PROVIDER, cheat], NOW, random.Random(3)) == PROVIDER


def bottom_peer(name: bytes, failed: bool, global_trust: float = 0.0) -> Ranked:
    return Ranked(Identity.from_seed(name).peer_id, 0.0, Reputation(0.0, 0.0, {}), global_trust, False, failed)


def test_a_fresh_identity_starts_beside_a_known_bad_peer_never_above_it():
    fresh, known_bad = bottom_peer(b"fresh", failed=False), bottom_peer(b"known bad", failed=True)
    rng = random.Random(5)
    picks = [choose([fresh, known_bad], SelectionPolicy(), rng).peer for _ in range(4000)]
    assert 0.45 < picks.count(fresh.peer) / len(picks) < 0.55
    # A stranger the validators' trust reaches comes first when nobody is trusted.
    reached = bottom_peer(b"reached", failed=False, global_trust=0.01)
    picks = [choose([fresh, known_bad, reached], SelectionPolicy(), rng).peer for _ in range(4000)]
    assert picks.count(reached.peer) / len(picks) > 0.99


def test_the_bottom_shares_one_newcomer_budget_however_many_are_there():
    trusted = Ranked(PROVIDER, 1.0, Reputation(90.0, 0.9, {}), 0.1, True, False)
    swarm = [bottom_peer(bytes([i]) + b"sybil", failed=False) for i in range(200)]
    policy = SelectionPolicy()
    rng = random.Random(9)
    picks = [choose([trusted, *swarm], policy, rng) for _ in range(20_000)]
    to_swarm = sum(pick is not trusted for pick in picks) / len(picks)
    assert to_swarm <= 1.5 * policy.newcomers
