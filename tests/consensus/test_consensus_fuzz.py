"""Seeded adversarial schedules (consensus/fuzz.py): safe and live, replayable, and a checker that can fail."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hypermesh.consensus.linearizability import ACQUIRE
from hypermesh.consensus.fuzz import Outcome, generate_schedule, replay, run_schedule, view_timeout
from hypermesh.consensus.signing import Scheme
from hypermesh.consensus.sim import SIM_CONFIG, Behaviour
from hypermesh.consensus.tendermint import TendermintCore
from hypermesh.consensus.validators import ValidatorSet

# The bench runs seeds 0, 1, ...; these are others. Small chunks (a few CPU seconds each) let
# pytest-xdist spread them and keep each test far from the per-test timeout on a loaded machine.
FIRST_SEED = 1_000_000
CHUNKS = ([(4, offset, 10) for offset in range(0, 200, 10)] + [(7, offset, 5) for offset in range(0, 20, 5)]
          + [(10, offset, 2) for offset in range(0, 10, 2)])  # 230 schedules


def assert_ok(outcome: Outcome) -> None:
    assert outcome.ok, outcome.describe()


@pytest.mark.parametrize("n, offset, count", CHUNKS)
def test_seeded_schedules_with_byzantine_stake_are_safe_and_live(n, offset, count):
    for seed in range(FIRST_SEED + offset, FIRST_SEED + offset + count):
        assert_ok(run_schedule(generate_schedule(seed, n)))


def test_seed_276_ends_a_validator_that_holds_a_quorum_alone_decides_one_height_per_call():
    """Once slashing left validator 1 with a quorum alone, it decided heights in a loop and the run never ended."""
    outcome = replay(276)
    assert_ok(outcome)
    first = {}
    for node in outcome.sim.honest_nodes():
        for height, at in node.commit_times.items():
            first[height] = min(at, first.get(height, at))
    times = sorted(first.values())
    assert all(b - a >= SIM_CONFIG.timeout_commit - 1e-9 for a, b in zip(times, times[1:]))


def test_schedules_mix_every_adversary():
    """Over a few dozen seeds every Byzantine behaviour, partition, kill and network fault appears."""
    schedules = [generate_schedule(seed) for seed in range(60)]
    behaviours = {b for s in schedules for _, b in s.byzantine}
    assert behaviours == set(Behaviour) - {Behaviour.HONEST}
    actions = {step.action for s in schedules for step in s.steps}
    assert actions == {"partition", "heal", "crash", "restart"}
    assert {s.n for s in schedules} == {4, 7, 10}
    assert {bool(s.lock_clients) for s in schedules} == {True, False}
    assert any(0 < len(s.ml_dsa) < s.n for s in schedules) and any(len(s.ml_dsa) == s.n for s in schedules)
    assert any(not s.ml_dsa for s in schedules)
    assert any(len(step.groups) == 3 for s in schedules for step in s.steps)
    for fault in ("loss", "duplicate", "flap_interval", "crash_on_commit"):
        assert any(getattr(s.network, fault) > 0 for s in schedules), fault


def test_lock_clients_see_a_linearizable_history_and_the_check_fails_on_a_forged_one():
    schedules = [generate_schedule(seed, 4) for seed in range(FIRST_SEED, FIRST_SEED + 40)]
    for schedule in [s for s in schedules if s.lock_clients]:
        outcome = run_schedule(schedule)
        assert_ok(outcome)
        history = outcome.locks.history()
        granted = [op for op in history if op.kind == ACQUIRE and op.result.ok]
        if len(history) >= 10 and granted:
            break
    else:
        raise AssertionError("no schedule decided ten lock requests")
    # A second grant of the same lease to another client, inside the first: not linearizable, and overlapping.
    first = granted[0]
    forged = dataclasses.replace(first, process=b"someone else", result=dataclasses.replace(
        first.result, token=first.result.token + 1000))
    outcome.locks.completed.append(forged)
    problems = outcome.locks.violations()
    assert any("not linearizable" in p for p in problems) and any("overlap" in p for p in problems), problems


def test_a_seed_replays_exactly_and_prints_its_schedule_step_by_step():
    first, second = replay(13), replay(13)
    assert first.describe() == second.describe()
    assert [n.committed for n in first.sim.nodes] == [n.committed for n in second.sim.nodes]
    assert first.sim.now == second.sim.now
    text = first.describe()
    schedule = generate_schedule(13)
    for line in schedule.describe():
        assert line in text
    assert "stable (GST passed, healed, restarted)" in text


def test_an_ml_dsa_seed_replays_the_same_decisions_with_ml_dsa_certificates_on_the_ledger():
    """Seed 0: four validators signing with ML-DSA-65, lock clients on the ledger. ML-DSA signing is
    randomised, so signature bytes differ between runs; what happens, and when, does not."""
    schedule = generate_schedule(0)
    assert schedule.ml_dsa == (0, 1, 2, 3) and schedule.lock_clients
    first, second = run_schedule(schedule), run_schedule(schedule)
    assert_ok(first)
    assert first.sim.trace == second.sim.trace
    assert [n.commit_times for n in first.sim.nodes] == [n.commit_times for n in second.sim.nodes]
    assert "ML-DSA-65 signers: [0, 1, 2, 3]" in first.describe()
    node = first.sim.honest_nodes()[0]
    certificate = node.store.load_commit(node.store.last_commit_height()).certificate
    assert {len(signature) for _, signature in certificate.signatures} == {Scheme.ML_DSA_65.signature_size}


def test_a_seed_replays_the_same_in_another_process_under_another_hash_seed():
    """Seed 1: lock clients on the ledger, a forger, a double-voter and an invalid proposer."""
    code = "from hypermesh.consensus.fuzz import replay; print(replay(1).describe())"
    runs = {subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": hash_seed},
                           capture_output=True, text=True, check=True, timeout=300).stdout
            for hash_seed in ("1", "2")}
    assert len(runs) == 1 and "lock history" in runs.pop()


class LoweredQuorumSet(ValidatorSet):
    """A broken rule: more than a third counts as a quorum."""

    def is_quorum(self, power: int) -> bool:
        return self.exceeds_faulty(power)


class LoweredQuorumCore(TendermintCore):
    """A deliberately broken core: what the checker must catch."""

    def __init__(self, chain_id, validators, *args, **kwargs):
        super().__init__(chain_id, LoweredQuorumSet(list(validators.validators)), *args, **kwargs)


class NoRoundChangeCore(TendermintCore):
    """A deliberately broken core that never leaves a failed round (the precommit timeout does nothing)."""

    def _on_timeout(self, kind, now):
        if self.step < 2:
            super()._on_timeout(kind, now)


def first_failing(core_class, seeds):
    for seed in seeds:
        outcome = run_schedule(generate_schedule(seed, 4), core_class)
        if not outcome.ok:
            return outcome
    return None


def test_the_checker_catches_a_core_with_a_lowered_quorum():
    outcome = first_failing(LoweredQuorumCore, range(40))
    assert outcome is not None, "40 schedules against a broken quorum rule found nothing"
    assert outcome.violations
    assert "VIOLATION" in outcome.describe()
    # The failing seed replays to the same failure.
    again = run_schedule(outcome.schedule, LoweredQuorumCore)
    assert again.violations == outcome.violations and again.describe() == outcome.describe()


def test_the_liveness_check_catches_a_core_that_never_changes_round():
    outcome = first_failing(NoRoundChangeCore, range(40))
    assert outcome is not None, "40 schedules against a core stuck in failed rounds found nothing"
    assert outcome.liveness_miss and not outcome.violations
    assert "LIVENESS MISS" in outcome.describe()


def test_view_timeout_grows_with_the_round():
    c = SIM_CONFIG
    assert view_timeout(c, 0) == pytest.approx(c.timeout_propose + c.timeout_prevote + c.timeout_precommit)
    assert view_timeout(c, 2) - view_timeout(c, 1) == pytest.approx(3 * c.timeout_delta)


BENCH = Path(__file__).resolve().parents[2] / "bench" / "consensus_fuzz.py"


def test_the_bench_prints_one_json_object_of_checks_and_replays_a_seed():
    run = subprocess.run([sys.executable, str(BENCH), "--schedules", "3"], capture_output=True, text=True,
                         check=True, timeout=300)
    report = json.loads(run.stdout)
    checks = {c["name"]: c for c in report["checks"]}
    for n in (4, 7, 10):
        assert checks[f"schedules_n{n}"]["value"] == 1
        assert checks[f"safety_violations_n{n}"]["value"] == 0 and checks[f"liveness_misses_n{n}"]["value"] == 0
        assert f"lock_histories_checked_n{n}" in checks and f"schedules_per_cpu_s_n{n}" in checks
        assert f"ml_dsa_schedules_n{n}" in checks
    replayed = subprocess.run([sys.executable, str(BENCH), "--seed", "3"], capture_output=True, text=True,
                              check=True, timeout=300)
    assert replayed.stdout.startswith("schedule:\n  seed 3: n=4")
    assert json.loads(replayed.stdout.splitlines()[-1])["ok"] is True
