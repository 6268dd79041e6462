"""The trust engine: observations, attestations and stake in; scores, rankings and shun decisions out.

Sans-IO like the DHT core: every method takes ``now`` (seconds), nothing
reads a clock or touches the network, so the simulator (sim.py) and the
node's driver run the same code. Persistence is the store's job (store.py);
the engine exposes what to save (:meth:`snapshot_peer`) and how to restore it.

Four sources combine:

- *local reputation* (score.py): what this node saw a peer do;
- *believed reviews* (reviews.py): what reviewers say of a peer, each
  weighted by its credibility — how well its reviews agreed with what the
  validators, this node and other believed reviewers saw;
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
# A node that owns its review board re-spreads credibility at most this often (seconds).
CREDIBILITY_REFRESH = 60.0


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
    trusts, so that rankings keep learning; a smaller share goes to the
    *bottom* — peers nobody vouches for, strangers and known-bad alike — so
    honest newcomers can start and bad peers can appeal by fresh good
    behaviour. The bottom share is one budget per task, split over everyone
    at the bottom: a swarm of fresh identities can never take more than it,
    however many they are.
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
    # Staked, served us well, or reported good by believed reviewers.
    trusted: bool = False
    # Did us more harm than good, is reported bad by believed reviewers, or misleads as a reviewer.
    failed: bool = False


def choose(
    ranked: Sequence[Ranked], policy: SelectionPolicy, rng: random.Random, strangers_if_none: bool = True
) -> Ranked | None:
    """The provider to route one task to, from candidates ranked best first.

    Candidates fall in two tiers: *trusted* (stake, our own good experience,
    or believed reviewers vouch for them) get the work; the *bottom* —
    strangers and peers that did harm, first hand or by believed report —
    only the newcomer share. A new identity starts at the bottom, beside a
    peer with a bad but known record, never above it, so taking a fresh
    identity gains nothing (Friedman and Resnick, "The social cost of cheap
    pseudonyms", 2001: newcomers must pay their dues). With nobody trusted
    the bottom gets the task after all: strangers the global trust vector
    reaches (vouched for along a chain from the validators) first, else
    anyone at the bottom, fresh identities and known-bad peers alike.
    With ``strangers_if_none`` false, a set holding nobody trusted yields
    None (outside the newcomer share), so that the caller can look for more
    candidates before it hands work to the bottom.
    """
    if not ranked:
        return None
    trusted = [r for r in ranked if r.trusted]
    bottom = [r for r in ranked if not r.trusted]
    draw = rng.random()
    if bottom and draw < policy.newcomers:
        return rng.choice(bottom)
    if not trusted:
        if not strangers_if_none:
            return None
        reached = [r for r in bottom if not r.failed and r.global_trust > 0]
        return rng.choice(reached or bottom)
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
        # The simulator shares one vector and one board among many engines
        # (every node computes the same ones from the same gossiped
        # attestations) and spreads credibility itself; an engine that owns
        # its board refreshes it, anchored on the validators and itself.
        self.global_trust = global_trust if global_trust is not None else GlobalTrust()
        self._owns_board = reviews is None
        self.reviews = reviews if reviews is not None else ReviewBoard(self.global_trust)
        self._board_refreshed_at: float | None = None
        self._row_stale = False
        # Latest admitted attestation per (issuer, subject), kept to save and to pass on.
        self._attestations: dict[tuple[PeerId, PeerId], Attestation] = {}
        self._shunned: dict[PeerId, Shun] = {}
        self._stake: dict[PeerId, float] = {}
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
            self._review_first_hand(peer, now)

    def _review_first_hand(self, peer: PeerId, now: float) -> None:
        """Our own performance evidence of ``peer``: our review on the board and our row in global trust."""
        self._record_own_review(peer, now)
        if self.global_trust.deferred:
            self._row_stale = True  # the vector waits for its next recompute anyway
        else:
            self._refresh_own_row(now)

    def _record_own_review(self, peer: PeerId, now: float) -> None:
        good, bad = self.counts(peer, Dimension.PERFORMANCE, now)
        self.reviews.record(self.local, peer, round(good), round(bad))

    def prove(self, peer: PeerId, proof: Proof, now: float, detail: str = "") -> None:
        """Checked proof of misbehaviour: heavy evidence and an immediate shun."""
        if peer == self.local:
            return
        record = self.evidence(peer, now)
        record.add(Dimension.PERFORMANCE, now, self.config.half_life, bad=PROOF_PENALTY)
        record.add(Dimension.SECURITY, now, self.config.half_life, bad=PROOF_PENALTY)
        self._changes.evidence[peer] = record
        reason = proof.value + (f": {detail}" if detail else "")
        self._review_first_hand(peer, now)
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
        self.global_trust.set_row(self.local, self._own_row(now))
        self._row_stale = False

    def flush_row(self, now: float) -> None:
        """Hand a deferred global-trust vector this node's row, if it changed, before it recomputes."""
        if self._row_stale:
            self._refresh_own_row(now)

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
        """How much an issuer's reviews count: nothing without stake or history.

        History is our own experience of the issuer, or its credibility: how
        well its past reviews agreed with what believed reviewers saw.
        """
        if self.is_shunned(issuer, now):
            return 0.0
        if self._stake.get(issuer, 0.0) > 0:
            return 1.0
        self._refresh_board(now)
        return max(self.observed_reputation(issuer, now).pessimistic() / 100.0, self.reviews.credibility(issuer))

    def _refresh_board(self, now: float) -> None:
        """Re-spread credibility over our own board, at most every CREDIBILITY_REFRESH seconds."""
        if not (self._owns_board and self.reviews.changed):
            return
        if self._board_refreshed_at is not None and now - self._board_refreshed_at < CREDIBILITY_REFRESH:
            return
        self.reviews.recompute(anchors=[self.local, *self._stake])
        self._board_refreshed_at = now

    # -- stake -------------------------------------------------------------
    def set_stake(self, stakes: dict[PeerId, float]) -> None:
        self._stake = {peer: s for peer, s in stakes.items() if s > 0}
        self.global_trust.set_stake(self._stake)
        self.reviews.changed = True

    def recompute(self, now: float) -> int:
        """Refresh this node's row, the whole global-trust vector and (if ours) the reviewers' credibility."""
        for peer in self._evidence:
            self._record_own_review(peer, now)
        self._refresh_own_row(now)
        for issuer in {issuer for issuer, _ in self._attestations}:
            self._refresh_issuer_row(issuer)
        if self._owns_board:
            self.reviews.recompute(anchors=[self.local, *self._stake])
            self._board_refreshed_at = now
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
            weight = 0.0 if issuer == self.local else self.issuer_weight(issuer, now)
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
            if issuer == self.local or self.is_shunned(issuer, now):
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

        A candidate is *failed* when it did us more harm than good first
        hand; when, unknown to us, believed reviewers report it bad; or when
        it misleads as a reviewer (it covers for cheats: the spies and
        camouflaged collectives of the EigenTrust paper). It is *trusted*
        when, not failed, it has stake, served us well, or believed
        reviewers report it good. The key mixes our own pessimistic score
        with the believed reviewers' satisfaction × their confidence; global
        trust *mass* only breaks ties — ranking by mass let a collective that
        passes trust among its own members pile it up and draw more tasks
        than random choice. First-hand evidence overrules hearsay.
        ``use_global=False`` ranks on our own observations alone.
        """
        pool = list(dict.fromkeys(candidates))
        if self._shunned:
            pool = [peer for peer in pool if not self.is_shunned(peer, now)]
        if not pool:
            return []
        if use_global:
            self._refresh_board(now)
        dimension = Dimension.UPTIME if purpose is Purpose.ROUTING else Dimension.PERFORMANCE
        indices = np.array([_index_or_minus_one(self.global_trust.find(peer)) for peer in pool], dtype=np.int64)
        satisfaction, reported_evidence, misleading = self.reviews.reported(indices)
        global_trust = np.where(indices >= 0, self.global_trust.trust_of_indices(np.maximum(indices, 0)), 0.0)
        unknown = PeerEvidence(first_seen=now).reputation(now, self.config.weights, self.config.half_life)
        half_life = self.config.half_life
        ranked = []
        for position, peer in enumerate(pool):
            record = self._evidence.get(peer)
            if record is None:
                good = bad = 0.0
                local = unknown
            else:
                good, bad = record.counts(dimension, now, half_life)
                local = record.reputation(now, self.config.weights, half_life)
            staked = bool(self._stake) and peer in self._stake
            if use_global:
                evidence = float(reported_evidence[position])
                believed = float(satisfaction[position])
                hearsay_bad = good + bad == 0 and evidence > 0 and believed < 0.5
                failed = bad > good or hearsay_bad or (bool(misleading[position]) and not staked)
                vouched = evidence > 0 and believed > 0.5
                reported = 0.0 if failed else believed * confidence_of(evidence)
            else:
                failed, vouched, reported = bad > good, False, 0.0
            trusted = not failed and (staked or good > 0 or vouched)
            key = 0.5 * local.pessimistic() / 100.0 + 0.5 * reported
            ranked.append(Ranked(peer, key, local, float(global_trust[position]) if use_global else 0.0, trusted, failed))
        # Equal keys (strangers to us and to those we believe): global trust decides.
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


def _index_or_minus_one(index: int | None) -> int:
    return -1 if index is None else index
