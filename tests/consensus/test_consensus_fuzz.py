"""Seeded adversarial schedules (consensus/fuzz.py): safe and live, replayable, and a checker that can fail."""

import pytest

from hypermesh.consensus.fuzz import Outcome, generate_schedule, replay, run_schedule, view_timeout
from hypermesh.consensus.sim import SIM_CONFIG, Behaviour
from hypermesh.consensus.tendermint import TendermintCore
from hypermesh.consensus.validators import ValidatorSet

# The bench runs seeds 0, 1, ...; these are others. Chunks let pytest-xdist spread them.
FIRST_SEED = 1_000_000
CHUNKS = [(4, 0, 80), (4, 80, 80), (4, 160, 80), (7, 0, 15), (7, 15, 15), (10, 0, 8), (10, 8, 8)]  # 286 schedules


def assert_ok(outcome: Outcome) -> None:
    assert outcome.ok, outcome.describe()


@pytest.mark.parametrize("n, offset, count", CHUNKS)
def test_seeded_schedules_with_byzantine_stake_are_safe_and_live(n, offset, count):
    for seed in range(FIRST_SEED + offset, FIRST_SEED + offset + count):
        assert_ok(run_schedule(generate_schedule(seed, n)))


def test_schedules_mix_every_adversary():
    """Over a few dozen seeds every Byzantine behaviour, partition, kill and network fault appears."""
    schedules = [generate_schedule(seed) for seed in range(60)]
    behaviours = {b for s in schedules for _, b in s.byzantine}
    assert behaviours == set(Behaviour) - {Behaviour.HONEST}
    actions = {step.action for s in schedules for step in s.steps}
    assert actions == {"partition", "heal", "crash", "restart"}
    assert {s.n for s in schedules} == {4, 7, 10}
    assert any(len(step.groups) == 3 for s in schedules for step in s.steps)
    for fault in ("loss", "duplicate", "flap_interval", "crash_on_commit"):
        assert any(getattr(s.network, fault) > 0 for s in schedules), fault


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
