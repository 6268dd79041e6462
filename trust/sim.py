"""A deterministic simulator of task routing under the EigenTrust paper's threat models.

Kamvar, Schlosser and Garcia-Molina, "The EigenTrust Algorithm for
Reputation Management in P2P Networks", WWW 2003, §7 define the threat
models reproduced here:

- ``individual`` (A): malicious peers always serve bad results and vouch at random;
- ``collective`` (B): malicious peers always serve badly and vouch only for each other;
- ``camouflaged`` (C): as B, but serve well with probability ``camouflage``
  to earn trust from honest peers;
- ``spies`` (D): half the malicious peers serve well ("spies") and vouch
  only for the other half, who always serve badly.

Plus two of ours: ``sybils`` (1,000 identities without stake that vouch for
one another, added to honest and malicious peers) and whitewashing (a bad
peer that rejoins under a new identity whenever it is caught).

Every honest peer runs a real :class:`TrustEngine` over one shared
:class:`GlobalTrust` and :class:`ReviewBoard` (every node computes the same
ones from the same gossiped attestations; sharing them saves 1,000 copies).
Each cycle every honest peer routes one task to a provider chosen from
``candidates`` peers drawn at random and records the outcome as an
observation, which is also its review of the provider. At the end of a
cycle the global-trust vector is recomputed and reviewers' credibility
re-spread from the bonded validators (honest, 3% of peers, the pre-trusted
set) — the board is shared, so its anchors are the validators alone, where
a node's own board also anchors on the node itself. Randomness comes from
one seeded ``random.Random``; time is virtual (one cycle = one minute).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass

from hypermesh.transport.identity import PeerId

from .eigentrust import DEFAULT_DAMPING, GlobalTrust
from .engine import Observation, TrustConfig, TrustEngine
from .reviews import ReviewBoard

THREAT_MODELS = ("individual", "collective", "camouflaged", "spies")
CYCLE_SECONDS = 60.0
# Candidate sets drawn before a task goes to a stranger for want of anyone known.
WIDENINGS = 3
# The interactions a malicious reviewer claims with each ally.
FAKE_PRAISE = 1000


@dataclass(frozen=True, slots=True)
class SimConfig:
    peers: int = 1000
    malicious_fraction: float = 0.2
    threat_model: str = "individual"
    cycles: int = 30
    candidates: int = 20
    validator_fraction: float = 0.03
    # Tasks a provider accepts per cycle before it answers "busy".
    capacity: int = 2
    damping: float = DEFAULT_DAMPING
    honest_success: float = 0.98
    camouflage: float = 0.5
    sybils: int = 0
    # Sybils appear once the network has formed its trust, as a swarm would.
    sybil_arrival: int = 10
    whitewashers: int = 0
    # How tasks are routed: "trust" (the engine), "local" (own observations only) or "random".
    routing: str = "trust"
    seed: int = 1


@dataclass
class SimResult:
    config: SimConfig
    tasks: int = 0
    routed_to_malicious: int = 0
    bad_results: int = 0
    routed_to_sybils: int = 0
    tasks_since_sybils: int = 0
    # Over the second half of the cycles, once trust has had time to form.
    steady_tasks: int = 0
    steady_to_malicious: int = 0
    steady_bad_results: int = 0
    whitewasher_tasks: int = 0
    stayer_tasks: int = 0

    def share(self, part: int, whole: int) -> float:
        return part / whole if whole else 0.0

    def summary(self) -> dict:
        return {
            "tasks": self.tasks,
            "malicious_share": self.share(self.routed_to_malicious, self.tasks),
            "bad_result_share": self.share(self.bad_results, self.tasks),
            "steady_malicious_share": self.share(self.steady_to_malicious, self.steady_tasks),
            "steady_bad_result_share": self.share(self.steady_bad_results, self.steady_tasks),
            "sybil_share": self.share(self.routed_to_sybils, self.tasks_since_sybils),
            "whitewasher_tasks": self.whitewasher_tasks,
            "stayer_tasks": self.stayer_tasks,
        }


def _peer(index: int, salt: str = "") -> PeerId:
    # Deterministic, distinct sha2-256 peer IDs without generating 1,000 keys.
    return PeerId(bytes([0x12, 32]) + hashlib.sha256(f"{salt}/{index}".encode()).digest())


class TrustSim:
    def __init__(self, config: SimConfig):
        if config.threat_model not in THREAT_MODELS:
            raise ValueError(f"unknown threat model {config.threat_model!r}")
        self.config = config
        self.rng = random.Random(config.seed)
        n = config.peers
        self.ids = [_peer(i) for i in range(n)]
        malicious_count = int(round(n * config.malicious_fraction))
        # Malicious peers are the last ones; validators the first (honest, staked).
        self.malicious = set(self.ids[n - malicious_count :])
        self.validators = self.ids[: max(1, int(round(n * config.validator_fraction)))]
        ordered_bad = self.ids[n - malicious_count :]
        if config.threat_model == "spies":
            self.spies = set(ordered_bad[: len(ordered_bad) // 2])
        else:
            self.spies = set()
        self.sybils = [_peer(i, "sybil") for i in range(config.sybils)]
        self.sybil_set = set(self.sybils)
        # Recomputed once per cycle: pushing each of thousands of row changes would be wasted work.
        self.global_trust = GlobalTrust(config.damping, deferred=True)
        self.global_trust.set_stake({v: 1.0 for v in self.validators})
        self.honest = [p for p in self.ids if p not in self.malicious]
        self.reviews = ReviewBoard(self.global_trust)
        self.engines = {
            p: TrustEngine(p, TrustConfig(), global_trust=self.global_trust, reviews=self.reviews)
            for p in self.honest
        }
        # Whitewashers: malicious peers that take a new identity once caught.
        self.whitewashers = sorted(ordered_bad, key=lambda p: p.multihash)[: config.whitewashers]
        # Each whitewasher's identity of the moment (at first its own), and every identity's owner:
        # an abandoned identity still listed as a provider this cycle is still the same cheat.
        self._identity = {peer: peer for peer in self.whitewashers}
        self._owner = dict(self._identity)
        self._aliases = 0
        self._load: Counter = Counter()
        self._set_malicious_rows()

    # -- behaviour -------------------------------------------------------------
    def _serves_well(self, provider: PeerId) -> bool:
        if provider in self.sybil_set:
            return False
        original = self.owner(provider)
        if original not in self.malicious:
            return self.rng.random() < self.config.honest_success
        if original in self.spies:
            return True
        if self.config.threat_model == "camouflaged":
            return self.rng.random() < self.config.camouflage
        return False

    def owner(self, provider: PeerId) -> PeerId:
        """Who is behind an identity: a whitewasher's fresh identities all lead back to it."""
        return self._owner.get(provider, provider)

    def _set_malicious_rows(self) -> None:
        """What malicious peers and Sybils attest: glowing reviews of their allies."""
        model = self.config.threat_model
        bad = sorted(self.malicious, key=lambda p: p.multihash)
        served_badly = [p for p in bad if p not in self.spies]
        for peer in bad:
            if model == "individual":
                allies = {self.rng.choice(self.ids) for _ in range(5)}
            elif model == "spies":
                allies = set(served_badly)
            else:
                allies = set(bad)
            self._praise(peer, allies - {peer})
        for sybil in self.sybils:
            self._praise(sybil, set(self.rng.sample(self.sybils, min(10, len(self.sybils)))) - {sybil})

    def _praise(self, reviewer: PeerId, allies: set[PeerId]) -> None:
        # In peer-ID order: a set's order follows the process's hash seed, and
        # the order peers enter the global-trust vector must not.
        allies = sorted(allies, key=lambda peer: peer.multihash)
        for ally in allies:
            self.reviews.record(reviewer, ally, FAKE_PRAISE, 0)
        self.global_trust.set_row(reviewer, {ally: float(FAKE_PRAISE) for ally in allies})

    def providers(self, cycle: int) -> list[PeerId]:
        """Everyone offering work in ``cycle``, each under its identity of the moment."""
        current = [p for p in self.ids if p not in self._identity]
        current += list(self._identity.values())
        if cycle >= self.config.sybil_arrival:
            current += self.sybils
        return current

    # -- routing ---------------------------------------------------------------
    def _candidates(self, providers: list[PeerId], requester: PeerId) -> list[PeerId]:
        drawn = self.rng.sample(providers, self.config.candidates + 1)
        # A busy provider refuses ("busy") and the router moves on: leave it out.
        free = [p for p in drawn if p != requester and self._load[self.owner(p)] < self.config.capacity]
        return free[: self.config.candidates] or drawn[:1]

    def _choose(self, engine: TrustEngine, providers: list[PeerId], requester: PeerId, now: float) -> PeerId:
        routing = self.config.routing
        if routing == "random":
            return self.rng.choice(self._candidates(providers, requester))
        use_global = routing == "trust"
        # As a router would ask the DHT for more providers when it knows none of those found.
        for attempt in range(WIDENINGS):
            last = attempt == WIDENINGS - 1
            picked = engine.choose(
                self._candidates(providers, requester), now, self.rng, use_global=use_global, strangers_if_none=last
            )
            if picked is not None:
                return picked
        raise AssertionError("the last attempt always picks")

    def _maybe_whitewash(self, provider: PeerId, engine: TrustEngine, now: float) -> None:
        original = self.owner(provider)
        if self._identity.get(original) != provider:
            return  # not a whitewasher, or it has already moved on from this identity
        if engine.observed_reputation(provider, now).score >= 50:
            return
        # Caught: rejoin under a fresh identity.
        self._aliases += 1
        fresh = _peer(self._aliases, "white")
        self._owner[fresh] = original
        self._identity[original] = fresh

    def run(self) -> SimResult:
        config = self.config
        result = SimResult(config)
        stayers = set(sorted(self.malicious - set(self.whitewashers), key=lambda p: p.multihash)[: config.whitewashers])
        now = 0.0
        for cycle in range(config.cycles):
            now = cycle * CYCLE_SECONDS
            providers = self.providers(cycle)
            self._load = Counter()
            steady = cycle >= config.cycles // 2
            for requester in self.honest:
                engine = self.engines[requester]
                provider = self._choose(engine, providers, requester, now)
                # Capacity is the machine's, not the identity's: a fresh identity brings no more of it.
                self._load[self.owner(provider)] += 1
                good = self._serves_well(provider)
                # Also the requester's review of the provider, as gossip would carry it.
                engine.observe(provider, Observation.RECEIPT_VERIFIED if good else Observation.WRONG_OUTPUT, now)
                original = self.owner(provider)
                is_malicious = original in self.malicious
                result.tasks += 1
                result.routed_to_malicious += is_malicious
                result.bad_results += not good
                if cycle >= config.sybil_arrival:
                    result.tasks_since_sybils += 1
                    result.routed_to_sybils += provider in self.sybil_set
                if original in self.whitewashers:
                    result.whitewasher_tasks += 1
                elif original in stayers:
                    result.stayer_tasks += 1
                if steady:
                    result.steady_tasks += 1
                    result.steady_to_malicious += is_malicious
                    result.steady_bad_results += not good
                if not good:
                    self._maybe_whitewash(provider, engine, now)
            for engine in self.engines.values():
                engine.flush_row(now)
            self.global_trust.recompute()
            self.reviews.recompute(anchors=self.validators)
        return result


def run(config: SimConfig) -> SimResult:
    return TrustSim(config).run()
