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

import numpy as np

from hypermesh.transport.identity import PeerId

from .attestation import Attestation, AttestationError, AttestationGate, GateConfig
from .eigentrust import GlobalTrust
from .reviews import REVIEW_EVIDENCE, ReviewBoard
from .score import DEFAULT_HALF_LIFE, DEFAULT_WEIGHTS, DecayingTally, Dimension, confidence_of, PeerEvidence, Reputation, validate_weights

log = logging.getLogger(__name__)

# The mission's propagation rule: a trusted voucher lends at most this many points.
MAX_VOUCH_BOOST = 15.0
# Only vouchers this node itself rates at least this highly (pessimistic score) lend a boost.
VOUCHER_SCORE = 80.0
# Evidence one proof of misbehaviour adds against the peer.
PROOF_PENALTY = 50.0
DEFAULT_SHUN_SECONDS = 30 * 24 * 3600.0
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


@dataclass(slots=True)
class TrustChanges:
    """What changed since the last :meth:`TrustEngine.take_changes`: what the store must write."""

    evidence: dict[PeerId, PeerEvidence] = field(default_factory=dict)
    attestations: list[Attestation] = field(default_factory=list)
    # None: the shun was lifted.
    shuns: dict[PeerId, Shun | None] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.evidence or self.attestations or self.shuns)


@dataclass(frozen=True, slots=True)
class SelectionPolicy:
    """How a provider is chosen from ranked candidates (see :func:`choose`).

    Mostly the best; a small share explores other peers the network already
    trusts, so that rankings keep learning; a smaller share goes to peers
    nobody trusts yet, so honest newcomers can start — and so that a swarm of
    fresh identities can never take more than that share.
    """

    explore: float = 0.03
    newcomers: float = 0.01


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
    # Vouched for by global trust or by our own good experience.
    trusted: bool = False
    # Did us more harm than good, first hand.
    failed: bool = False


def choose(
    ranked: Sequence[Ranked], policy: SelectionPolicy, rng: random.Random, strangers_if_none: bool = True
) -> Ranked | None:
    """The provider to route one task to, from candidates ranked best first.

    Candidates fall in three groups: *trusted* (the network or our own good
    experience vouches for them), *strangers* (nothing known) and *failed*
    (they did us more harm than good). Trusted ones get the work, strangers
    only the newcomer share, failed ones only when there is nobody else.
    With ``strangers_if_none`` false, a set holding nobody trusted yields
    None (outside the newcomer share), so that the caller can look for more
    candidates before it hands work to a stranger.
    """
    if not ranked:
        return None
    trusted = [r for r in ranked if r.trusted]
    strangers = [r for r in ranked if not r.trusted and not r.failed]
    draw = rng.random()
    if strangers and draw < policy.newcomers:
        return rng.choice(strangers)
    if not trusted:
        if not strangers_if_none:
            return None
        return rng.choice(strangers) if strangers else ranked[0]
    if len(trusted) > 1 and draw < policy.newcomers + policy.explore:
        return rng.choice(trusted[1:])
    return trusted[0]


class TrustEngine:
    def __init__(
        self,
        local: PeerId,
        config: TrustConfig | None = None,
        global_trust: GlobalTrust | None = None,
        reviews: ReviewBoard | None = None,
    ):
        self.local = local
        self.config = config or TrustConfig()
        self._evidence: dict[PeerId, PeerEvidence] = {}
        self._gate = AttestationGate(self.config.gate)
        # The simulator shares one vector and one board among many engines:
        # every node computes the same ones from the same gossiped attestations.
        self.global_trust = global_trust if global_trust is not None else GlobalTrust()
        self.reviews = reviews if reviews is not None else ReviewBoard(self.global_trust)
        # Latest admitted attestation per (issuer, subject), kept to save and to pass on.
        self._attestations: dict[tuple[PeerId, PeerId], Attestation] = {}
        self._shunned: dict[PeerId, Shun] = {}
        self._stake: dict[PeerId, float] = {}
        # Reviewer credibility, from our own outcomes with the peers they reviewed.
        self._credibility: dict[PeerId, list[int]] = {}
        # Reviewers caught misleading us, and reviewers we listen to (validators and
        # peers that served us well, less the discredited), by global-trust index.
        self._discredited = np.zeros(0, dtype=bool)
        self._heard = np.zeros(0, dtype=bool)
        self._changes = TrustChanges()

    # -- observations ------------------------------------------------------
    def evidence(self, peer: PeerId, now: float) -> PeerEvidence:
        record = self._evidence.get(peer)
        if record is None:
            record = self._evidence[peer] = PeerEvidence(first_seen=now)
        return record

    def counts(self, peer: PeerId, dimension: Dimension, now: float) -> tuple[float, float]:
        """Decayed (good, bad) evidence of ``peer`` in ``dimension``; (0, 0) for a stranger, who stays one."""
        record = self._evidence.get(peer)
        return (0.0, 0.0) if record is None else record.counts(dimension, now, self.config.half_life)

    def take_changes(self) -> TrustChanges:
        changes, self._changes = self._changes, TrustChanges()
        return changes

    def restore_evidence(self, peer: PeerId, record: PeerEvidence) -> None:
        self._evidence[peer] = record

    def observe(self, peer: PeerId, observation: Observation, now: float, amount: float = 1.0) -> None:
        if peer == self.local:
            return
        dimension, good, bad = _EVIDENCE[observation]
        record = self.evidence(peer, now)
        record.add(dimension, now, self.config.half_life, good * amount, bad * amount)
        self._changes.evidence[peer] = record
        if dimension is Dimension.PERFORMANCE:
            self._judge_reviewers(peer, served_well=good > 0)
        self._refresh_own_row(now)

    def _judge_reviewers(self, provider: PeerId, served_well: bool) -> None:
        """Score everyone who reviewed ``provider`` by what it just did for us.

        Global trust cannot tell a good provider from a good *reviewer*: the
        EigenTrust paper's spies serve well and vouch for a collective that
        does not, and a camouflaged collective praises its own members. Each
        node therefore counts how often a reviewer's verdict matched its own
        experience; one that misled it at least CREDIBILITY_STRIKES times, and
        more often than not, is no longer heard in this node's rankings.
        """
        for reviewer, (good, bad) in self.reviews.reviewers(provider).items():
            if reviewer == self.local or self.is_discredited(reviewer):
                continue
            tally = self._credibility.setdefault(reviewer, [0, 0])
            tally[0 if (good >= bad) == served_well else 1] += 1
            if tally[1] >= CREDIBILITY_STRIKES and tally[1] > tally[0]:
                self._discredit(reviewer)

    def _discredit(self, reviewer: PeerId) -> None:
        index = self.global_trust.index_of(reviewer)
        self._discredited = _set_flag(self._discredited, index, True)
        self._heard = _set_flag(self._heard, index, False)

    def is_discredited(self, reviewer: PeerId) -> bool:
        index = self.global_trust.find(reviewer)
        return index is not None and index < len(self._discredited) and bool(self._discredited[index])

    def prove(self, peer: PeerId, proof: Proof, now: float, detail: str = "") -> None:
        """Checked proof of misbehaviour: heavy evidence and an immediate shun."""
        if peer == self.local:
            return
        record = self.evidence(peer, now)
        record.add(Dimension.PERFORMANCE, now, self.config.half_life, bad=PROOF_PENALTY)
        record.add(Dimension.SECURITY, now, self.config.half_life, bad=PROOF_PENALTY)
        self._changes.evidence[peer] = record
        reason = proof.value + (f": {detail}" if detail else "")
        self.shun(peer, reason, now)  # refreshes this node's row: the peer leaves it

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
        row = self._own_row(now)
        self.global_trust.set_row(self.local, row)
        heard = np.zeros(len(self._heard), dtype=bool)
        for peer in list(row) + list(self._stake):
            if not self.is_discredited(peer):
                heard = _set_flag(heard, self.global_trust.index_of(peer), True)
        self._heard = heard

    # -- attestations ------------------------------------------------------
    def accept_attestation(self, attestation: Attestation, sender: PeerId, now: float) -> None:
        """Admit a verified attestation (decode_attestation checked its signature)."""
        if attestation.subject == self.local:
            raise AttestationError("attestations about this node are not used by it")
        self._gate.admit(attestation, sender, now)
        self._remember(attestation)
        self._changes.attestations.append(attestation)
        self._refresh_issuer_row(attestation.issuer)

    def restore_attestation(self, attestation: Attestation) -> None:
        self._gate.restore(attestation.issuer, attestation.subject, attestation.sequence)
        self._remember(attestation)

    def _remember(self, attestation: Attestation) -> None:
        self._attestations[(attestation.issuer, attestation.subject)] = attestation
        self.reviews.record(attestation.issuer, attestation.subject, attestation.good, attestation.bad)

    def _refresh_issuer_row(self, issuer: PeerId) -> None:
        reviews = self.reviews.reviewed_by(issuer)
        self.global_trust.set_row(issuer, {subject: float(g - b) for subject, (g, b) in reviews.items() if g > b})

    def attestations(self) -> Iterable[Attestation]:
        return self._attestations.values()

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
        for peer in self._stake:
            if not self.is_discredited(peer):
                self._heard = _set_flag(self._heard, self.global_trust.index_of(peer), True)

    def recompute(self, now: float) -> int:
        """Refresh this node's row and the whole global-trust vector."""
        self._refresh_own_row(now)
        for issuer in {issuer for issuer, _ in self._attestations}:
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
        for issuer, (issued_good, issued_bad) in self.reviews.reviewers(peer).items():
            weight = self.issuer_weight(issuer, now)
            interactions = issued_good + issued_bad
            if weight > 0 and interactions:
                # One reviewer is one opinion: its counts are scaled to at most REVIEW_EVIDENCE.
                scale = weight * min(1.0, REVIEW_EVIDENCE / interactions)
                good += scale * issued_good
                bad += scale * issued_bad
        if good or bad:
            merged.tallies[Dimension.PEER_REVIEW] = DecayingTally(good=good, bad=bad, at=now)
        return merged

    def vouch_boost(self, peer: PeerId, now: float) -> float:
        """Points lent by highly trusted vouchers: at most MAX_VOUCH_BOOST."""
        best = 0.0
        for issuer, (issued_good, issued_bad) in self.reviews.reviewers(peer).items():
            if self.is_shunned(issuer, now):
                continue
            voucher = self.observed_reputation(issuer, now).pessimistic()
            if voucher >= VOUCHER_SCORE:
                satisfaction = (issued_good + 1) / (issued_good + issued_bad + 2)
                best = max(best, MAX_VOUCH_BOOST * (voucher / 100.0) * satisfaction)
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

        A peer is *trusted* when it has stake, served us well, or is vouched
        for by reviewers we listen to (validators and peers that served us
        well); the key mixes our own pessimistic view with what those
        reviewers report. Global trust *mass* only breaks ties: in the
        simulator, ranking by mass let a collective that passes trust among
        its own members (the paper's threat models C and D) pile up mass and
        draw more tasks than random choice would give it. First-hand
        evidence overrules hearsay: a peer that did more harm than good to
        *us* gets no credit from others, however they vouch for it.
        """
        pool = [peer for peer in dict.fromkeys(candidates) if not self.is_shunned(peer, now)]
        dimension = Dimension.UPTIME if purpose is Purpose.ROUTING else Dimension.PERFORMANCE
        ranked = []
        for peer in pool:
            local = self.reputation(peer, now)
            trust = self.global_trust.trust(peer) if use_global else 0.0
            good, bad = self.counts(peer, dimension, now)
            failed = bad > good
            reported = 0.0
            vouched = False
            if failed:
                local = self.observed_reputation(peer, now)
            elif use_global:
                satisfaction, evidence = self.reviews.quality(peer, self._heard)
                reported = satisfaction * confidence_of(evidence)
                vouched = evidence > 0 and satisfaction > 0.5
            own = local.pessimistic() / 100.0
            trusted = not failed and (vouched or good > 0 or peer in self._stake)
            ranked.append(Ranked(peer, 0.5 * own + 0.5 * reported, local, trust, trusted, failed))
        # Equal keys (strangers to us and to those we listen to): global trust decides.
        ranked.sort(key=lambda r: (-r.key, -r.global_trust, r.peer.multihash))
        return ranked

    def choose(
        self,
        candidates: Iterable[PeerId],
        now: float,
        rng: random.Random,
        use_global: bool = True,
        strangers_if_none: bool = True,
    ) -> PeerId | None:
        """The provider for one task, by :func:`choose` over :meth:`rank`.

        ``use_global=False`` chooses from this node's own observations alone
        (the simulator's baseline).
        """
        ranked = self.rank(candidates, now, use_global=use_global)
        picked = choose(ranked, self.config.policy, rng, strangers_if_none)
        return None if picked is None else picked.peer

    # -- shun list ---------------------------------------------------------
    def shun(self, peer: PeerId, reason: str, now: float, seconds: float | None = None) -> Shun:
        entry = Shun(reason, now + (self.config.shun_seconds if seconds is None else seconds))
        self._shunned[peer] = entry
        self._changes.shuns[peer] = entry
        log.warning("shunning %s until +%.0f s: %s", peer.short(), entry.until - now, reason)
        self._refresh_own_row(now)
        return entry

    def unshun(self, peer: PeerId) -> bool:
        lifted = self._shunned.pop(peer, None) is not None
        if lifted:
            self._changes.shuns[peer] = None
        return lifted

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


def _set_flag(flags: np.ndarray, index: int, value: bool) -> np.ndarray:
    """``flags`` with ``flags[index] = value``, grown when the index is past its end."""
    if index >= len(flags):
        grown = np.zeros(max(2 * len(flags), index + 1, 64), dtype=bool)
        grown[: len(flags)] = flags
        flags = grown
    flags[index] = value
    return flags
