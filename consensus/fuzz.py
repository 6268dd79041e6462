"""Seeded adversarial schedules for the consensus simulator, and the checks every run must pass.

A :class:`Schedule` is a pure function of one seed: the number of validators
(4, 7 or 10, from the seed), their powers, which of them are Byzantine (as
much power as stays below a third) and how each misbehaves, the network
before the global stabilisation time (loss, delay, duplication, reordering,
flapping links, kills right after a decision), a timeline of partitions
that heal and honest validators killed and restarted from their saved
signer state, and which validators sign with ML-DSA-65 instead of Ed25519
(one schedule in five of each n; its own random stream, so the rest of
every earlier seed's schedule is unchanged). ML-DSA signatures are randomised: their bytes
differ between replays, the events and decisions do not. :func:`run_schedule` runs it on :class:`ConsensusSim` and
checks:

Safety (:func:`safety_violations`), at the end of the run:
  - agreement: no two honest validators decided different values at a height;
  - no reverts: no honest validator decided a height twice differently, and
    each decided every height from 1 to its last, as its store holds them;
  - certificates: every decision an honest store holds carries a certificate
    of more than two thirds of the power for that value, height and set, and
    the value is one the application accepts;
  - honest validators signed no conflicting votes (equivocation evidence names
    Byzantine validators only).

Liveness, from the *stable time* T: GST has passed, the last partition has
healed and every killed honest validator has restarted (the network is
synchronous and every honest validator runs). Let H be the highest height an
honest validator had decided at T, and r the highest round an honest
validator is in at height H + 1. Some honest validator must decide H + 1 by
T + timeout_commit + 3 × view_timeout(r), where

    view_timeout(r) = timeout_propose + timeout_prevote + timeout_precommit + 3 r timeout_delta
                      (+ idle_block_interval in round 0 of a chain whose application can be idle)

is the longest an honest validator stays in round r when the round fails
(each of its three timeouts grows by timeout_delta per round; round 0 waits
for an idle proposer), plus view_timeout(r') for every round r' ≥ r whose
proposer is Byzantine (such a round may always be wasted; the bound counts
three rounds led by honest proposers); timeout_commit is the commit wait a
validator that has just decided H may be in. Every honest validator must then reach H + 2 within
:data:`CATCH_UP_LIMIT` (no validator is left behind for good).

Locks, in the schedules with lock clients (:mod:`.fuzz_locks`): every node
runs the ledger, clients issue lock requests throughout, and their history
must be linearizable with no two leases overlapping in block time. The
certificates are then checked against the validator set of their height
(slashing may change it), which a fresh ledger replaying the chain follows,
and every node's state roots must match that replay's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, fields

from .fuzz_locks import LockClients, STAKE_UNIT, client_identities, ledger_app_factory, lock_genesis
from .ledger import Ledger
from .sim import (
    BYZANTINE_BEHAVIOURS,
    SIM_CHAIN,
    SIM_CONFIG,
    Behaviour,
    ConsensusSim,
    NetworkConfig,
    SimApp,
    byzantine_by_stake,
)
from .tendermint import TendermintConfig, TendermintCore
from .validators import ValidatorSet
from .wire import RejectedMessage, verify_commit

N_CHOICES = (4, 7, 10)
# The share of schedules whose nodes run the ledger with lock clients (the others run SimApp, which is cheaper).
LOCK_SHARE = 0.5
# Virtual seconds the lock clients go on after the liveness checks.
LOCK_TAIL = 0.2
# Virtual seconds after the stable time in which every honest validator must reach H + 2.
CATCH_UP_LIMIT = 30.0
# One schedule in this many of each n has validators signing with ML-DSA-65 (a mixed or an all-ML-DSA set).
ML_DSA_EVERY = 5


def view_timeout(config: TendermintConfig, round_: int, idle: bool = False) -> float:
    """The longest an honest validator stays in ``round_`` when that round fails
    (``idle``: the application may have nothing to propose, and round 0 waits for its proposer)."""
    wait = config.idle_block_interval if idle and round_ == 0 else 0.0
    return config.timeout_propose + wait + config.timeout_prevote + config.timeout_precommit \
        + 3 * round_ * config.timeout_delta


def liveness_bound(config: TendermintConfig, validators: ValidatorSet, byzantine_keys: set[bytes],
                   height: int, round_: int, views: int = 3, idle: bool = False) -> float:
    """Seconds from the stable time by which ``height`` must be decided (see the module's docstring)."""
    bound, honest_views = config.timeout_commit, 0
    while honest_views < views:
        bound += view_timeout(config, round_, idle)
        if validators.proposer(height, round_) not in byzantine_keys:
            honest_views += 1
        round_ += 1
    return bound


@dataclass(frozen=True, slots=True)
class Step:
    """One action of a schedule's timeline."""

    at: float
    action: str  # "partition", "heal", "crash" or "restart"
    node: int = -1
    groups: tuple[tuple[int, ...], ...] = ()

    def apply(self, sim: ConsensusSim) -> None:
        if self.action == "partition":
            sim.partition([list(g) for g in self.groups])
        elif self.action == "heal":
            sim.heal()
        elif self.action == "crash":
            sim.crash(self.node)
        else:
            sim.restart(self.node)

    def describe(self) -> str:
        what = {"partition": f"partition {[list(g) for g in self.groups]}", "heal": "heal"}
        return f"t={self.at:.3f} " + what.get(self.action, f"{self.action} validator {self.node}")


@dataclass(frozen=True)
class Schedule:
    seed: int
    powers: tuple[int, ...]
    byzantine: tuple[tuple[int, Behaviour], ...]
    network: NetworkConfig
    steps: tuple[Step, ...]
    # GST passed, partitions healed, killed honest validators restarted.
    stable_at: float
    # Lock clients (0: the nodes run SimApp; else the ledger, and this many clients issue lock requests).
    lock_clients: int = 0
    # The validators that sign with ML-DSA-65 (the others with Ed25519).
    ml_dsa: tuple[int, ...] = ()

    @property
    def n(self) -> int:
        return len(self.powers)

    def describe(self) -> list[str]:
        """The schedule, one line per fact and per step."""
        lines = [f"seed {self.seed}: n={self.n} powers={list(self.powers)}",
                 "byzantine: " + (", ".join(f"{i} {b.value}" for i, b in self.byzantine) or "none"),
                 "network: " + " ".join(f"{f.name}={getattr(self.network, f.name):g}" for f in fields(self.network))]
        lines.append(f"application: ledger, {self.lock_clients} lock clients" if self.lock_clients
                     else "application: SimApp")
        lines.append(f"ML-DSA-65 signers: {list(self.ml_dsa)}" if self.ml_dsa else "signatures: Ed25519")
        lines += [step.describe() for step in self.steps]
        lines.append(f"t={self.stable_at:.3f} stable (GST passed, healed, restarted)")
        return lines


def generate_schedule(seed: int, n: int | None = None) -> Schedule:
    """The schedule of ``seed`` (``n`` from the seed unless given)."""
    rng = random.Random(f"consensus-fuzz-{seed}")
    n = n or N_CHOICES[seed % len(N_CHOICES)]
    powers = [1] * n if rng.random() < 0.5 else [rng.randint(1, 5) for _ in range(n)]
    byzantine = tuple((i, rng.choice(BYZANTINE_BEHAVIOURS)) for i in byzantine_by_stake(powers, rng))
    gst = rng.uniform(0.2, 2.0)
    network = NetworkConfig(
        gst=gst,
        loss=rng.choice((0.0, 0.05, 0.2, 0.4)),
        pre_gst_max_delay=rng.uniform(0.02, 0.6),
        duplicate=rng.choice((0.0, 0.02, 0.1)),
        flap_interval=rng.choice((0.0, 0.0, 0.1, 0.3)),
        link_cut=rng.uniform(0.1, 0.5),
        crash_on_commit=rng.choice((0.0, 0.0, 0.05, 0.2)),
        down_time=rng.uniform(0.05, 1.0),
    )
    steps = []
    honest = [i for i in range(n) if i not in dict(byzantine)]
    for node in rng.sample(honest, rng.randint(0, 2)):
        crash_at = rng.uniform(0.0, gst)
        steps += [Step(crash_at, "crash", node), Step(crash_at + rng.uniform(0.05, 1.5), "restart", node)]
    at = rng.uniform(0.0, gst / 2)
    for _ in range(rng.choice((0, 1, 1, 2))):
        order = rng.sample(range(n), n)
        cuts = sorted(rng.sample(range(1, n), rng.choice((1, 2))))
        groups = tuple(tuple(sorted(order[a:b])) for a, b in zip([0] + cuts, cuts + [n]))
        heal_at = at + rng.uniform(0.1, 2.0)
        steps += [Step(at, "partition", groups=groups), Step(heal_at, "heal")]
        at = heal_at + rng.uniform(0.0, 0.5)
    steps.sort(key=lambda s: s.at)
    stable_at = max([gst + (network.down_time if network.crash_on_commit else 0.0)] + [s.at for s in steps])
    lock_clients = rng.randint(2, 5) if rng.random() < LOCK_SHARE else 0
    # From a stream of its own, so that adding schemes left every earlier seed's schedule as it was.
    schemes = random.Random(f"consensus-fuzz-schemes-{seed}")
    signs_ml_dsa = (seed // len(N_CHOICES)) % ML_DSA_EVERY == 0
    ml_dsa = tuple(sorted(schemes.sample(range(n), schemes.randint(1, n)))) if signs_ml_dsa else ()
    return Schedule(seed, tuple(powers), byzantine, network, tuple(steps), stable_at, lock_clients, ml_dsa)


@dataclass
class Outcome:
    schedule: Schedule
    violations: list[str] = field(default_factory=list)
    # Why liveness failed (None: it held).
    liveness_miss: str | None = None
    # From the stable time to the first decision after it, and the bound it had to meet.
    resume_after: float | None = None
    resume_bound: float = 0.0
    sim: ConsensusSim | None = None
    locks: LockClients | None = None

    @property
    def ok(self) -> bool:
        return not self.violations and self.liveness_miss is None

    def describe(self) -> str:
        """The schedule step by step, what happened, and what failed: what a failing seed prints."""
        sim = self.sim
        lines = ["schedule:"] + ["  " + line for line in self.schedule.describe()]
        lines.append("events (the simulator's trace, kills after a decision included):")
        lines += ["  " + event for event in sim.trace]
        lines.append("decisions (first honest decision per height: time, round):")
        first: dict[int, tuple[float, int]] = {}
        for node in sim.honest_nodes():
            for height, at in node.commit_times.items():
                if height not in first or at < first[height][0]:
                    commit = node.store.load_commit(height)
                    first[height] = (at, commit.certificate.round if commit else -1)
        lines += [f"  h={h} t={at:.3f} round={r}" for h, (at, r) in sorted(first.items())]
        lines.append(f"heights: {({n.index: max(n.committed, default=0) for n in sim.nodes})}")
        lines.append(f"rejected: {dict(sim.rejected)}")
        if self.locks is not None:
            history = self.locks.history()
            lines.append(f"lock history: {len(history)} requests decided, "
                         f"{sum(op.result.ok for op in history)} granted or released")
        lines.append(f"resumed {self.resume_after} s after the stable time (bound {self.resume_bound:.3f} s)")
        lines += [f"VIOLATION: {v}" for v in self.violations]
        if self.liveness_miss:
            lines.append(f"LIVENESS MISS: {self.liveness_miss}")
        return "\n".join(lines)


def safety_violations(sim: ConsensusSim, byzantine: set[int], reference) -> list[str]:
    """Everything that breaks safety in ``sim`` so far (see the module's docstring).

    ``reference``: a fresh application of the kind the nodes run; it replays
    the longest honest chain, to judge each value and to follow the validator
    set each height's certificates must come from."""
    violations = [f"height {h}: honest validators decided {len(values)} different values"
                  for h, values in sorted(sim.conflicts().items())]
    honest = sim.honest_nodes()
    sets = _replay(max(honest, key=lambda node: node.store.last_commit_height()), sim.validator_set, reference,
                   violations)
    for node in honest:
        if node.reverted:
            violations.append(f"validator {node.index} reverted heights {node.reverted}")
        last = max(node.committed, default=0)
        if set(node.committed) != set(range(1, last + 1)):
            violations.append(f"validator {node.index} skipped heights: {sorted(node.committed)}")
        for height in range(1, node.store.last_commit_height() + 1):
            commit = node.store.load_commit(height)
            if commit is None or commit.value != node.committed.get(height) or height not in sets:
                violations.append(f"validator {node.index}: its store disagrees with its decision at {height}")
                continue
            try:
                verify_commit(commit, SIM_CHAIN, sets[height])
            except RejectedMessage as exc:
                violations.append(f"validator {node.index} height {height}: bad certificate ({exc})")
        roots = getattr(node.app, "roots", {})
        diverged = [h for h, root in roots.items() if getattr(reference, "roots", {}).get(h, root) != root]
        if diverged:
            violations.append(f"validator {node.index}: application state differs from a replay at {diverged}")
    honest_equivocators = sim.equivocators() - byzantine
    if honest_equivocators:
        violations.append(f"honest validators {sorted(honest_equivocators)} signed conflicting votes")
    return violations


def _replay(node, validators: ValidatorSet, reference, violations: list[str]) -> dict[int, ValidatorSet]:
    """Replay ``node``'s decisions on ``reference``: the validator set of each height (what a follower does)."""
    sets = {}
    finalize = getattr(reference, "finalize", None)
    for height in range(1, node.store.last_commit_height() + 1):
        commit = node.store.load_commit(height)
        if commit is None:
            break
        sets[height] = validators
        if commit.certificate.height != height or not reference.is_valid(height, commit.value):
            violations.append(f"validator {node.index} height {height}: decided an invalid value")
            break
        if finalize is not None:
            validators = finalize(commit) or validators
    return sets


def run_schedule(schedule: Schedule, core_class: type[TendermintCore] = TendermintCore,
                 config: TendermintConfig = SIM_CONFIG) -> Outcome:
    byzantine, ml_dsa = dict(schedule.byzantine), frozenset(schedule.ml_dsa)
    powers, app_factory, clients = list(schedule.powers), None, []
    reference = SimApp(-1, random.Random(0))
    if schedule.lock_clients:
        clients = client_identities(schedule.seed, schedule.lock_clients)
        genesis = lock_genesis(schedule.seed, powers, clients, ml_dsa)
        app_factory = ledger_app_factory(genesis, lambda: sim.now)
        powers = [power * STAKE_UNIT for power in powers]
        reference = Ledger(genesis)
    sim = ConsensusSim(schedule.seed, powers, byzantine=byzantine, network=schedule.network,
                       config=config, core_class=core_class, app_factory=app_factory, ml_dsa=ml_dsa)
    outcome = Outcome(schedule, sim=sim)
    if clients:
        outcome.locks = LockClients(sim, clients, random.Random(f"lock-clients-{schedule.seed}"))
        outcome.locks.start()
    for step in schedule.steps:
        sim.schedule(step.at, step.apply, sim)
    sim.start()
    stable_at = schedule.stable_at
    sim.run_until(stable_at)
    honest = sim.honest_nodes()
    height = max(max(node.committed, default=0) for node in honest) + 1
    at_height = [node.core for node in honest if node.core is not None and node.core.height == height]
    round_ = max((core.round for core in at_height), default=0)
    validators = at_height[0].validators if at_height else sim.validator_set
    byzantine_keys = {sim.nodes[i].key for i in byzantine}
    idle = hasattr(reference, "has_pending")
    outcome.resume_bound = liveness_bound(config, validators, byzantine_keys, height, round_, idle=idle)
    sim.run_until(stable_at + outcome.resume_bound, stop=lambda: any(height in node.committed for node in honest))
    decided_at = [node.commit_times[height] for node in honest if height in node.commit_times]
    if decided_at:
        outcome.resume_after = round(min(decided_at) - stable_at, 6)
        if not sim.run_until_height(height + 1, stable_at + CATCH_UP_LIMIT):
            outcome.liveness_miss = f"not every honest validator reached height {height + 1} by t+{CATCH_UP_LIMIT}"
    else:
        outcome.liveness_miss = (f"no honest validator decided height {height} (round {round_} at the stable time) "
                                 f"within {outcome.resume_bound:.3f} s")
    if outcome.locks is not None:
        sim.run_until(sim.now + LOCK_TAIL)  # more requests on a synchronous network
    outcome.violations = safety_violations(sim, set(byzantine), reference)
    if outcome.locks is not None:
        outcome.violations += outcome.locks.violations()
    return outcome


def replay(seed: int, core_class: type[TendermintCore] = TendermintCore) -> Outcome:
    """Run ``seed``'s schedule again: the same run, event for event."""
    return run_schedule(generate_schedule(seed), core_class)


__all__ = ["CATCH_UP_LIMIT", "N_CHOICES", "Outcome", "Schedule", "Step", "generate_schedule", "liveness_bound",
           "replay", "run_schedule", "safety_violations", "view_timeout"]
