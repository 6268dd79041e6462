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
:class:`GlobalTrust` (every node computes the same global vector from the
same gossiped attestations; sharing it saves 1,000 copies). Each cycle every
honest peer routes one task to a provider chosen from ``candidates`` peers
drawn at random, records the outcome as an observation, and its local trust
row changes accordingly. Bonded validators (honest, 3% of peers) are the
pre-trusted set. Randomness comes from one seeded ``random.Random``; time
is virtual (one cycle = one minute).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from dataclasses import dataclass, field

from hypermesh.transport.identity import PeerId

from .eigentrust import GlobalTrust
from .engine import Observation, TrustConfig, TrustEngine

THREAT_MODELS = ("individual", "collective", "camouflaged", "spies")
CYCLE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class SimConfig:
    peers: int = 1000
    malicious_fraction: float = 0.2
    threat_model: str = "individual"
    cycles: int = 30
    candidates: int = 20
    validator_fraction: float = 0.03
    honest_success: float = 0.98
    camouflage: float = 0.5
    sybils: int = 0
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
    # Over the second half of the cycles, once trust has had time to form.
    steady_tasks: int = 0
    steady_to_malicious: int = 0
    steady_bad_results: int = 0
    per_provider: Counter = field(default_factory=Counter)
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
            "sybil_share": self.share(self.routed_to_sybils, self.tasks),
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
        self.global_trust = GlobalTrust()
        self.global_trust.set_stake({v: 1.0 for v in self.validators})
        self.honest = [p for p in self.ids if p not in self.malicious]
        self.engines = {
            p: TrustEngine(p, TrustConfig(), global_trust=self.global_trust) for p in self.honest
        }
        # Whitewashers: malicious peers that take a new identity once caught.
        self.whitewash_alias: dict[PeerId, PeerId] = {}
        self.whitewashers = sorted(ordered_bad, key=lambda p: p.multihash)[: config.whitewashers]
        self._aliases = 0
        self._set_malicious_rows()

    # -- behaviour -------------------------------------------------------------
    def _serves_well(self, provider: PeerId) -> bool:
        if provider in self.sybil_set:
            return False
        original = self._original(provider)
        if original not in self.malicious:
            return self.rng.random() < self.config.honest_success
        if original in self.spies:
            return True
        if self.config.threat_model == "camouflaged":
            return self.rng.random() < self.config.camouflage
        return False

    def _original(self, provider: PeerId) -> PeerId:
        return self.whitewash_alias.get(provider, provider)

    def _set_malicious_rows(self) -> None:
        model = self.config.threat_model
        bad = sorted(self.malicious, key=lambda p: p.multihash)
        for peer in bad:
            if model == "individual":
                row = {self.rng.choice(self.ids): 1.0 for _ in range(5)}
            elif model == "spies":
                targets = [p for p in bad if p not in self.spies]
                row = {t: 1.0 for t in targets} if peer in self.spies else {t: 1.0 for t in targets if t != peer}
            else:
                row = {t: 1.0 for t in bad if t != peer}
            self.global_trust.set_row(peer, row)
        for sybil in self.sybils:
            self.global_trust.set_row(sybil, {other: 1.0 for other in self.rng.sample(self.sybils, min(10, len(self.sybils)))})

    def _providers(self) -> list[PeerId]:
        current = [p for p in self.ids if p not in self.whitewashers]
        current += [alias for alias in self.whitewash_alias]
        return current + self.sybils

    # -- routing ---------------------------------------------------------------
    def _choose(self, engine: TrustEngine, candidates: list[PeerId], now: float) -> PeerId:
        routing = self.config.routing
        if routing == "random":
            return self.rng.choice(candidates)
        if routing == "local":
            return engine.choose_locally(candidates, now, self.rng)
        return engine.choose(candidates, now, self.rng)

    def _maybe_whitewash(self, provider: PeerId, engine: TrustEngine, now: float) -> None:
        original = self._original(provider)
        if original not in self.whitewashers:
            return
        if engine.observed_reputation(provider, now).score >= 50:
            return
        # Caught: rejoin under a fresh identity.
        self._aliases += 1
        fresh = _peer(self._aliases, "white")
        for alias, who in list(self.whitewash_alias.items()):
            if who == original:
                del self.whitewash_alias[alias]
        self.whitewash_alias[fresh] = original

    def run(self) -> SimResult:
        config = self.config
        result = SimResult(config)
        stayers = set(sorted(self.malicious - set(self.whitewashers), key=lambda p: p.multihash)[: config.whitewashers])
        now = 0.0
        for cycle in range(config.cycles):
            now = cycle * CYCLE_SECONDS
            providers = self._providers()
            steady = cycle >= config.cycles // 2
            for requester in self.honest:
                engine = self.engines[requester]
                candidates = [p for p in self.rng.sample(providers, config.candidates + 1) if p != requester]
                candidates = candidates[: config.candidates]
                provider = self._choose(engine, candidates, now)
                good = self._serves_well(provider)
                engine.observe(provider, Observation.RECEIPT_VERIFIED if good else Observation.WRONG_OUTPUT, now)
                original = self._original(provider)
                is_malicious = original in self.malicious
                result.tasks += 1
                result.routed_to_malicious += is_malicious
                result.bad_results += not good
                result.routed_to_sybils += provider in self.sybil_set
                result.per_provider[original] += 1
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
            # Everyone's rows changed incrementally; a periodic full pass removes drift.
            self.global_trust.recompute()
        return result


def run(config: SimConfig) -> SimResult:
    return TrustSim(config).run()
