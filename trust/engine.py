"""The trust engine: observations, attestations and stake in; scores, rankings and shun decisions out.

Sans-IO like the DHT core: every method takes ``now`` (seconds), nothing
reads a clock or touches the network, so the simulator (sim.py) and the
node's driver run the same code. Persistence is the store's job (store.py);
the engine exposes what to save (:meth:`snapshot_peer`) and how to restore it.

Three sources combine:

- *local reputation* (score.py): what this node saw a peer do;
- *global trust* (eigentrust.py): everyone's local trust, propagated along
  signed attestations and anchored on bonded stake;
- *vouching*: a peer this node trusts highly (local score >= VOUCHER_SCORE)
  attesting to another lends it a bounded boost, at most +15 points.

Proof of misbehaviour (a forged receipt, a proven wrong output, consensus
equivocation) drops a peer at once onto the shun list, which the transport
and the DHT obey. A shun expires; after it the peer starts again with the
penalty's evidence still decaying, so only fresh good behaviour restores it.
"""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from hypermesh.transport.identity import PeerId

from .attestation import Attestation, AttestationError, AttestationGate, GateConfig
from .eigentrust import GlobalTrust
from .score import DEFAULT_HALF_LIFE, DEFAULT_WEIGHTS, DecayingTally, Dimension, PeerEvidence, Reputation, validate_weights

log = logging.getLogger(__name__)

# The mission's propagation rule: a trusted voucher lends at most this many points.
MAX_VOUCH_BOOST = 15.0
# Only vouchers this node itself rates at least this highly (pessimistic score) lend a boost.
VOUCHER_SCORE = 80.0
# Evidence one proof of misbehaviour adds against the peer.
PROOF_PENALTY = 50.0
DEFAULT_SHUN_SECONDS = 30 * 24 * 3600.0
# The most evidence one reviewer's attestation can add to a peer's peer-review dimension.
REVIEW_EVIDENCE = 5.0
# Misleading recommendations before a recommender is discredited (TrustEngine._judge_recommenders).
CREDIBILITY_STRIKES = 2


class Observation(enum.Enum):
    """What this node saw a peer do, and where the evidence goes."""

    RECEIPT_VERIFIED = "receipt_verified"  # remote run returned a receipt that verified
    RUN_TIMEOUT = "run_timeout"  # remote run missed its deadline or never answered
    WRONG_OUTPUT = "wrong_output"  # output disagreed with a check, not (yet) proven
    ON_TIME = "on_time"  # answered within its deadline; ``amount`` = share of the deadline left
    LATE = "late"
    PROBE_UP = "probe_up"  # uptime probe answered
    PROBE_DOWN = "probe_down"
    CLEAN_SESSION = "clean_session"  # a session ended with no protocol violation
    PROTOCOL_VIOLATION = "protocol_violation"  # malformed message reported by transport or DHT
    RATE_LIMITED = "rate_limited"  # hit one of our rate limits


class Proof(enum.Enum):
    """Misbehaviour proven by evidence anyone can check: shun at once."""

    FORGED_RECEIPT = "forged_receipt"
    PROVEN_WRONG_OUTPUT = "proven_wrong_output"
    EQUIVOCATION = "equivocation"  # consensus evidence: two signed votes for one slot


# observation -> (dimension, good, bad) per unit of ``amount``
_EVIDENCE: dict[Observation, tuple[Dimension, float, float]] = {
    Observation.RECEIPT_VERIFIED: (Dimension.PERFORMANCE, 1.0, 0.0),
    Observation.RUN_TIMEOUT: (Dimension.PERFORMANCE, 0.0, 1.0),
    Observation.WRONG_OUTPUT: (Dimension.PERFORMANCE, 0.0, 2.0),
    Observation.ON_TIME: (Dimension.SPEED, 1.0, 0.0),
    Observation.LATE: (Dimension.SPEED, 0.0, 1.0),
    Observation.PROBE_UP: (Dimension.UPTIME, 1.0, 0.0),
    Observation.PROBE_DOWN: (Dimension.UPTIME, 0.0, 1.0),
    Observation.CLEAN_SESSION: (Dimension.SECURITY, 1.0, 0.0),
    Observation.PROTOCOL_VIOLATION: (Dimension.SECURITY, 0.0, 3.0),
    Observation.RATE_LIMITED: (Dimension.SECURITY, 0.0, 0.5),
}


class Purpose(enum.Enum):
    """What a ranking is for: compute weighs results, routing weighs availability."""

    COMPUTE = "compute"
    ROUTING = "routing"


@dataclass(frozen=True, slots=True)
class Shun:
    reason: str
    until: float


@dataclass(frozen=True, slots=True)
class SelectionPolicy:
    """How a provider is chosen from ranked candidates (see :func:`choose`).

    Mostly the best; a small share explores other peers the network already
    trusts, so that rankings keep learning; a smaller share goes to peers
    nobody trusts yet, so honest newcomers can start — and so that a swarm of
    fresh identities can never take more than that share.
    """

    explore: float = 0.03
    newcomers: float = 0.005


@dataclass(slots=True)
class TrustConfig:
    weights: dict[Dimension, float] = field(default_factory=lambda: dict(DEFAULT_WEIGHTS))
    half_life: float = DEFAULT_HALF_LIFE
    shun_seconds: float = DEFAULT_SHUN_SECONDS
    gate: GateConfig = field(default_factory=GateConfig)
    policy: SelectionPolicy = field(default_factory=SelectionPolicy)

    def __post_init__(self) -> None:
        self.weights = validate_weights(self.weights)
        if not self.half_life > 0:
            raise ValueError("half_life must be positive")


@dataclass(frozen=True, slots=True)
class Ranked:
    peer: PeerId
    key: float
    local: Reputation
    global_trust: float


def choose(ranked: Sequence[Ranked], policy: SelectionPolicy, rng: random.Random) -> Ranked | None:
    """The provider to route one task to, from candidates ranked best first."""
    if not ranked:
        return None
    known = [r for r in ranked if r.global_trust > 0 or r.local.confidence > 0]
    unknown = [r for r in ranked if not (r.global_trust > 0 or r.local.confidence > 0)]
    draw = rng.random()
    if unknown and (not known or draw < policy.newcomers):
        return rng.choice(unknown)
    # Explore among the others the network trusts, never among peers that failed us.
    trusted_others = [r for r in known[1:] if r.global_trust > 0 and r.key > 0]
    if trusted_others and draw < policy.newcomers + policy.explore:
        return rng.choice(trusted_others)
    return known[0]


class TrustEngine:
    def __init__(self, local: PeerId, config: TrustConfig | None = None, global_trust: GlobalTrust | None = None):
        self.local = local
        self.config = config or TrustConfig()
        self._evidence: dict[PeerId, PeerEvidence] = {}
        self._gate = AttestationGate(self.config.gate)
        # Latest admitted attestation per (issuer, subject), indexed both ways.
        self._reviews_of: dict[PeerId, dict[PeerId, Attestation]] = {}
        self._reviews_by: dict[PeerId, dict[PeerId, Attestation]] = {}
        self._shunned: dict[PeerId, Shun] = {}
        self._stake: dict[PeerId, float] = {}
        # Recommender credibility, from our own outcomes with the peers they trust.
        self._credibility: dict[PeerId, list[int]] = {}
        self._discredited: set[PeerId] = set()
        # Global trust that discredited recommenders lent to each peer, removed when ranking.
        self._lent_by_discredited: dict[PeerId, float] = {}
        # The simulator shares one vector among many engines (all compute the same one).
        self.global_trust = global_trust if global_trust is not None else GlobalTrust()

    # -- observations ------------------------------------------------------
    def evidence(self, peer: PeerId, now: float) -> PeerEvidence:
        record = self._evidence.get(peer)
        if record is None:
            record = self._evidence[peer] = PeerEvidence(first_seen=now)
        return record

    def observe(self, peer: PeerId, observation: Observation, now: float, amount: float = 1.0) -> None:
        if peer == self.local:
            return
        dimension, good, bad = _EVIDENCE[observation]
        self.evidence(peer, now).add(dimension, now, self.config.half_life, good * amount, bad * amount)
        if dimension is Dimension.PERFORMANCE:
            self._judge_recommenders(peer, agreed=good > 0)
        self._refresh_own_row(now)

    def _judge_recommenders(self, provider: PeerId, agreed: bool) -> None:
        """Score everyone who vouched for ``provider`` by what it just did for us.

        Global trust cannot tell a good provider from a good *recommender*:
        the EigenTrust paper's spies serve well and pass their trust to a
        collective that does not. Each node therefore keeps its own count of
        how often a recommender's choices served it well; one that misled it
        at least CREDIBILITY_STRIKES times, and more often than not, is
        discredited, and the trust it lent is taken out of this node's rankings.
        """
        keep = 1 - self.global_trust.damping
        for recommender in self.global_trust.trusters(provider):
            if recommender == self.local or recommender in self._discredited:
                continue
            tally = self._credibility.setdefault(recommender, [0, 0])
            tally[0 if agreed else 1] += 1
            if tally[1] >= CREDIBILITY_STRIKES and tally[1] > tally[0]:
                self._discredited.add(recommender)
                lent = keep * self.global_trust.trust(recommender)
                for peer, weight in self.global_trust.row(recommender).items():
                    self._lent_by_discredited[peer] = self._lent_by_discredited.get(peer, 0.0) + lent * weight

    def support(self, peer: PeerId) -> float:
        """Global trust less what recommenders this node discredited lent to ``peer``."""
        return max(0.0, self.global_trust.trust(peer) - self._lent_by_discredited.get(peer, 0.0))

    def prove(self, peer: PeerId, proof: Proof, now: float, detail: str = "") -> None:
        """Checked proof of misbehaviour: heavy evidence and an immediate shun."""
        if peer == self.local:
            return
        record = self.evidence(peer, now)
        record.add(Dimension.PERFORMANCE, now, self.config.half_life, bad=PROOF_PENALTY)
        record.add(Dimension.SECURITY, now, self.config.half_life, bad=PROOF_PENALTY)
        reason = proof.value + (f": {detail}" if detail else "")
        self.shun(peer, reason, now)
        self._refresh_own_row(now)

    def _own_row(self, now: float) -> dict[PeerId, float]:
        """This node's local trust for EigenTrust.

        EigenTrust's ``sat - unsat``, floored at zero (the paper's s_ij).
        Weighing failures more heavily was tried in the simulator and made
        every threat model worse: honest providers' rare failures pushed them
        out of rows while a collective kept its own internal trust.
        """
        row = {}
        for peer, record in self._evidence.items():
            good, bad = record.counts(Dimension.PERFORMANCE, now, self.config.half_life)
            if good > bad and not self.is_shunned(peer, now):
                row[peer] = good - bad
        return row

    def _refresh_own_row(self, now: float) -> None:
        self.global_trust.set_row(self.local, self._own_row(now))

    # -- attestations ------------------------------------------------------
    def accept_attestation(self, attestation: Attestation, sender: PeerId, now: float) -> None:
        """Admit a verified attestation (decode_attestation checked its signature)."""
        if attestation.subject == self.local:
            raise AttestationError("attestations about this node are not used by it")
        self._gate.admit(attestation, sender, now)
        self._remember(attestation)
        self._refresh_issuer_row(attestation.issuer)

    def restore_attestation(self, attestation: Attestation) -> None:
        self._gate.restore(attestation.issuer, attestation.subject, attestation.sequence)
        self._remember(attestation)

    def _remember(self, attestation: Attestation) -> None:
        self._reviews_of.setdefault(attestation.subject, {})[attestation.issuer] = attestation
        self._reviews_by.setdefault(attestation.issuer, {})[attestation.subject] = attestation

    def _refresh_issuer_row(self, issuer: PeerId) -> None:
        reviews = self._reviews_by.get(issuer, {})
        row = {subject: float(a.good - a.bad) for subject, a in reviews.items() if a.good > a.bad}
        self.global_trust.set_row(issuer, row)

    def attestations(self) -> Iterable[Attestation]:
        for reviews in self._reviews_by.values():
            yield from reviews.values()

    def issuer_weight(self, issuer: PeerId, now: float) -> float:
        """How much an issuer's reviews count: nothing without stake or history."""
        if self.is_shunned(issuer, now):
            return 0.0
        if self._stake.get(issuer, 0.0) > 0:
            return 1.0
        # Our own observations only: weighing reviewers by reviews would go round in circles.
        return self.observed_reputation(issuer, now).pessimistic() / 100.0

    # -- stake -------------------------------------------------------------
    def set_stake(self, stakes: dict[PeerId, float]) -> None:
        self._stake = {peer: s for peer, s in stakes.items() if s > 0}
        self.global_trust.set_stake(self._stake)

    def recompute(self, now: float) -> int:
        """Refresh this node's row and the whole global-trust vector."""
        self.global_trust.set_row(self.local, self._own_row(now))
        for issuer in self._reviews_by:
            self._refresh_issuer_row(issuer)
        return self.global_trust.recompute()

    # -- scores ------------------------------------------------------------
    def observed_reputation(self, peer: PeerId, now: float) -> Reputation:
        """What this node itself saw, without anyone's reviews."""
        record = self._evidence.get(peer) or PeerEvidence(first_seen=now)
        return record.reputation(now, self.config.weights, self.config.half_life)

    def reputation(self, peer: PeerId, now: float) -> Reputation:
        record = self._evidence.get(peer) or PeerEvidence(first_seen=now)
        with_reviews = self._with_peer_reviews(peer, record, now)
        return with_reviews.reputation(now, self.config.weights, self.config.half_life)

    def _with_peer_reviews(self, peer: PeerId, record: PeerEvidence, now: float) -> PeerEvidence:
        """A copy of the evidence with reviews, weighted by their issuers, in the peer-review dimension."""
        merged = PeerEvidence(record.first_seen)
        merged.tallies = dict(record.tallies)
        good = bad = 0.0
        for issuer, attestation in self._reviews_of.get(peer, {}).items():
            weight = self.issuer_weight(issuer, now)
            interactions = attestation.good + attestation.bad
            if weight > 0 and interactions:
                # One reviewer is one opinion: its counts are scaled to at most REVIEW_EVIDENCE.
                scale = weight * min(1.0, REVIEW_EVIDENCE / interactions)
                good += scale * attestation.good
                bad += scale * attestation.bad
        if good or bad:
            merged.tallies[Dimension.PEER_REVIEW] = DecayingTally(good=good, bad=bad, at=now)
        return merged

    def vouch_boost(self, peer: PeerId, now: float) -> float:
        """Points lent by highly trusted vouchers: at most MAX_VOUCH_BOOST."""
        best = 0.0
        for issuer, attestation in self._reviews_of.get(peer, {}).items():
            if self.is_shunned(issuer, now):
                continue
            voucher = self.observed_reputation(issuer, now).pessimistic()
            if voucher >= VOUCHER_SCORE:
                best = max(best, MAX_VOUCH_BOOST * (voucher / 100.0) * attestation.satisfaction)
        return min(MAX_VOUCH_BOOST, best)

    def score(self, peer: PeerId, now: float) -> float:
        """The effective 0–100 reputation: local score plus a bounded vouch boost; 0 when shunned."""
        if self.is_shunned(peer, now):
            return 0.0
        return min(100.0, self.reputation(peer, now).score + self.vouch_boost(peer, now))

    def rank(
        self,
        candidates: Iterable[PeerId],
        now: float,
        purpose: Purpose = Purpose.COMPUTE,
        use_global: bool = True,
    ) -> list[Ranked]:
        """Candidates best first, shunned ones left out.

        The key mixes this node's own pessimistic view with the peer's share
        of global trust relative to the best candidate: what we saw ourselves
        counts, and so does what the stake-anchored network says. First-hand
        evidence overrules hearsay: a peer that did more harm than good to
        *us* gets no credit from global trust, however others vouch for it.
        """
        pool = [peer for peer in dict.fromkeys(candidates) if not self.is_shunned(peer, now)]
        trusts = {peer: self.support(peer) if use_global else 0.0 for peer in pool}
        top_trust = max(trusts.values(), default=0.0)
        dimension = Dimension.UPTIME if purpose is Purpose.ROUTING else Dimension.PERFORMANCE
        ranked = []
        for peer in pool:
            local = self.reputation(peer, now)
            relative = trusts[peer] / top_trust if top_trust > 0 else 0.0
            record = self._evidence.get(peer)
            if record is not None:
                good, bad = record.counts(dimension, now, self.config.half_life)
                if bad > good:
                    local = self.observed_reputation(peer, now)
                    relative = 0.0
            own = local.pessimistic() / 100.0
            ranked.append(Ranked(peer, 0.5 * own + 0.5 * relative, local, trusts[peer]))
        ranked.sort(key=lambda r: (-r.key, r.peer.multihash))
        return ranked

    def choose(self, candidates: Iterable[PeerId], now: float, rng: random.Random) -> PeerId | None:
        """The provider for one task, by :func:`choose` over :meth:`rank`."""
        picked = choose(self.rank(candidates, now), self.config.policy, rng)
        return None if picked is None else picked.peer

    def choose_locally(self, candidates: Iterable[PeerId], now: float, rng: random.Random) -> PeerId | None:
        """The same choice from this node's own observations alone (a baseline)."""
        picked = choose(self.rank(candidates, now, use_global=False), self.config.policy, rng)
        return None if picked is None else picked.peer

    # -- shun list ---------------------------------------------------------
    def shun(self, peer: PeerId, reason: str, now: float, seconds: float | None = None) -> Shun:
        entry = Shun(reason, now + (self.config.shun_seconds if seconds is None else seconds))
        self._shunned[peer] = entry
        log.warning("shunning %s until +%.0f s: %s", peer.short(), entry.until - now, reason)
        self.global_trust.set_row(self.local, self._own_row(now))
        return entry

    def unshun(self, peer: PeerId) -> bool:
        return self._shunned.pop(peer, None) is not None

    def is_shunned(self, peer: PeerId, now: float) -> bool:
        entry = self._shunned.get(peer)
        if entry is None:
            return False
        if now >= entry.until:
            del self._shunned[peer]
            return False
        return True

    def shunned(self, now: float) -> dict[PeerId, Shun]:
        return {peer: entry for peer, entry in list(self._shunned.items()) if self.is_shunned(peer, now)}

    def restore_shun(self, peer: PeerId, entry: Shun) -> None:
        self._shunned[peer] = entry

    def known_peers(self) -> list[PeerId]:
        return list(self._evidence)
