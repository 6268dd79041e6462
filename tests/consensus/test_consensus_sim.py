"""The consensus core end to end on the deterministic simulator: safety, liveness, partitions, crashes."""

import random

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from hypermesh.consensus import fuzz
from hypermesh.consensus.sim import SIM_CHAIN, SIM_CONFIG, Behaviour, ConsensusSim, NetworkConfig, SimApp
from hypermesh.consensus.sim import byzantine_by_stake
from hypermesh.consensus.tendermint import TendermintCore
from hypermesh.consensus.wire import Kind, Proposal, Vote, signer_of, verify_commit

SEEDS = st.integers(min_value=0, max_value=2**32 - 1)
GST = 3.0
# Before GST: a fifth of the messages lost, the rest up to 0.5 s late, a
# third of the links cut and reshuffled every 0.2 s, and one decision in ten
# followed by the decider's kill -9 (restart 1 s later).
STORMY = NetworkConfig(gst=GST, loss=0.2, pre_gst_max_delay=0.5, duplicate=0.05, flap_interval=0.2, link_cut=0.3,
                       crash_on_commit=0.1, down_time=1.0)


def view_timeout(round_):
    """The time one failed round costs at ``round_`` (its three timeouts)."""
    return fuzz.view_timeout(SIM_CONFIG, round_)


def assert_safe(sim, byzantine=()):
    context = sim.describe()
    assert not sim.conflicts(), context
    assert not any(n.reverted for n in sim.nodes), context
    # Honest validators, restarted ones included, never signed two conflicting votes.
    assert sim.equivocators() <= set(byzantine), context


def adversarial_run(seed, n, behaviour, heights_after_gst=4):
    rng = random.Random(seed)
    powers = [rng.randint(1, 5) for _ in range(n)]
    byzantine = byzantine_by_stake(powers, rng)
    sim = ConsensusSim(seed, powers, byzantine={i: behaviour for i in byzantine}, network=STORMY)
    sim.start()
    sim.run_until(GST)
    target = max(max(node.committed, default=0) for node in sim.honest_nodes()) + heights_after_gst
    live = sim.run_until_height(target, GST + 30.0)
    return sim, byzantine, live


def test_same_seed_same_run():
    def run():
        sim, _, _ = adversarial_run(11, 4, Behaviour.EQUIVOCATE)
        return [n.committed for n in sim.nodes], sim.now, dict(sim.rejected)
    assert run() == run()


def test_honest_validators_commit_the_same_certified_blocks():
    sim = ConsensusSim(1, [1, 1, 1, 1])
    sim.start()
    assert sim.run_until_height(10, 10.0), sim.describe()
    assert_safe(sim)
    for node in sim.nodes:
        for height in range(1, 11):
            verify_commit(node.store.load_commit(height), SIM_CHAIN, sim.validator_set)


@pytest.mark.parametrize("n, examples", [(4, 20), (7, 6), (10, 3)])
def test_equivocating_byzantine_stake_breaks_neither_safety_nor_liveness_after_gst(n, examples):
    @settings(max_examples=examples)
    @given(SEEDS)
    def check(seed):
        sim, byzantine, live = adversarial_run(seed, n, Behaviour.EQUIVOCATE)
        assert_safe(sim, byzantine)
        assert live, sim.describe()
    check()


@settings(max_examples=6)
@given(SEEDS)
@example(6829332)  # validators that lost round 0's precommits waited for them for ever (fixed by _offer_round)
def test_silent_byzantine_stake_does_not_stop_the_chain(seed):
    sim, byzantine, live = adversarial_run(seed, 7, Behaviour.SILENT)
    assert_safe(sim, byzantine)
    assert live, sim.describe()


def test_equivocation_is_detected_as_evidence_against_the_byzantine_only():
    sim = ConsensusSim(5, [1, 1, 1, 1], byzantine={2: Behaviour.EQUIVOCATE})
    sim.start()
    assert sim.run_until_height(8, 20.0), sim.describe()
    assert sim.equivocators() == {2}


def test_two_two_partition_commits_nothing_and_resumes_after_healing():
    sim = ConsensusSim(21, [1, 1, 1, 1])
    sim.start()
    assert sim.run_until_height(3, 10.0)
    sim.partition([[0, 1], [2, 3]])
    sim.run_until(sim.now + 0.5)  # what was already decided in flight settles
    frozen = {n.index: dict(n.committed) for n in sim.nodes}
    sim.run_until(sim.now + 10.0)
    assert {n.index: n.committed for n in sim.nodes} == frozen, "a side without a quorum committed"
    highest_round = max(n.core.round for n in sim.nodes)
    sim.heal()
    healed_at = sim.now
    before = max(max(c, default=0) for c in frozen.values())
    assert sim.run_until_height(before + 1, healed_at + 60.0), sim.describe()
    resumed_at = max(n.commit_times[before + 1] for n in sim.nodes)
    # Liveness: commits resume within three view timeouts of the round reached during the split.
    assert resumed_at - healed_at <= 3 * view_timeout(highest_round), (resumed_at - healed_at, highest_round)
    assert_safe(sim)


def test_validator_killed_mid_height_restarts_catches_up_and_never_double_signs():
    sim = ConsensusSim(8, [1, 1, 1, 1], network=NetworkConfig(duplicate=0.1))
    sim.start()
    sim.run_until(0.05)  # a few heights in, mid-round
    sim.crash(1)
    crashed_height = max(sim.nodes[1].committed, default=0)
    assert sim.run_until_height(crashed_height + 5, sim.now + 10.0)  # 3 of 4 carry on
    sim.restart(1)
    target = max(sim.nodes[0].committed) + 3
    assert sim.run_until_height(target, sim.now + 20.0), sim.describe()
    restarted = sim.nodes[1]
    assert all(h in restarted.committed for h in range(1, target + 1))
    assert_safe(sim)


def test_a_validator_restarted_after_many_heights_catches_up_within_a_bounded_time():
    """A node behind used to get catch_up_batch commits per re-send (0.5 s here), fewer than the chain decides:
    it took 6.7 s here. Now it asks for the next batch as soon as it has executed one. (Power 1 of 10: it is
    rarely the proposer, whose proposal at each new height also told the others where it was.)"""
    sim = ConsensusSim(12, [3, 3, 3, 1])
    sim.start()
    sim.crash(3)
    assert sim.run_until_height(200, 60.0), sim.describe()
    sim.restart(3)
    restarted_at, ahead = sim.now, max(sim.nodes[0].committed)
    behind = sim.nodes[3]
    sim.run_until(restarted_at + 3.0, stop=lambda: max(behind.committed, default=0) >= ahead)
    assert max(behind.committed, default=0) >= ahead, (sim.now - restarted_at, max(behind.committed, default=0), ahead)
    # Within a second or so: a rebroadcast interval to learn it is behind, then a batch per round trip.
    assert sim.now - restarted_at <= SIM_CONFIG.timeout_propose + SIM_CONFIG.rebroadcast_interval + 1.0
    assert_safe(sim)


class IdleSimApp(SimApp):
    """A sim application with no transactions: every block it proposes is empty (has_pending is False)."""

    def has_pending(self):
        return False


def test_an_idle_chain_makes_a_block_per_idle_interval_not_back_to_back():
    sim = ConsensusSim(13, [1, 1, 1, 1], app_factory=lambda index, identity, rng: IdleSimApp(index, rng))
    sim.start()
    sim.run_until(4.0)
    heights = [max(node.committed, default=0) for node in sim.nodes]
    # One block per idle_block_interval (plus a height's few delays and the commit wait), not one every few delays.
    assert 4.0 / (SIM_CONFIG.idle_block_interval + 0.1) <= min(heights) <= max(heights) <= 4.0 / SIM_CONFIG.idle_block_interval
    assert_safe(sim)


@settings(max_examples=6)
@given(SEEDS, st.lists(st.tuples(st.integers(0, 3), st.floats(0.0, 4.0), st.floats(0.05, 2.0)), max_size=4))
def test_crashes_and_restarts_at_random_times_keep_honest_validators_consistent(seed, crashes):
    sim = ConsensusSim(seed, [1, 1, 1, 1], network=STORMY)
    sim.start()
    for index, at, down_for in sorted(crashes, key=lambda c: c[1]):
        sim.run_until(max(sim.now, at))
        if sim.nodes[index].core is not None:
            sim.crash(index)
            sim.run_until(sim.now + down_for)
            sim.restart(index)
    sim.run_until(max(sim.now, GST))
    target = sim.min_honest_height() + 3
    assert sim.run_until_height(target, sim.now + 30.0), sim.describe()
    assert_safe(sim)


def test_more_than_a_third_down_halts_the_chain_until_they_return():
    sim = ConsensusSim(9, [2, 1, 1, 1])
    sim.start()
    assert sim.run_until_height(2, 10.0)
    sim.crash(0)
    sim.crash(1)  # 3 of 5 power left: not more than two thirds
    sim.run_until(sim.now + 0.5)
    frozen = {i: dict(sim.nodes[i].committed) for i in (2, 3)}
    sim.run_until(sim.now + 5.0)
    assert {i: sim.nodes[i].committed for i in (2, 3)} == frozen
    sim.restart(0)
    sim.restart(1)
    assert sim.run_until_height(max(frozen[2], default=0) + 2, sim.now + 30.0), sim.describe()
    assert_safe(sim)


class AmnesiacCore(TendermintCore):
    """A broken validator that ignores its lock: what the scripted schedule below must catch."""

    def _lock_allows(self, proposal):
        return True


def run_decision_only_the_crashed_validator_saw(core_class):
    """The schedule that locks exist for (n = 4, all honest).

    Round 0: A proposes v. B sees neither the proposal nor A's prevote, so it
    sees no polka and stays without a valid value; A, C and D see the polka,
    lock v and precommit it. Only A receives all three precommits: it decides v
    and is killed at once. Round 1: B proposes a new value w. C and D, locked
    on v, must not prevote w; if they did, B, C and D would decide w.
    """
    sim = ConsensusSim(4, [1, 1, 1, 1], core_class=core_class)
    index = {node.key: node.index for node in sim.nodes}
    a, b = index[sim.validator_set.proposer(1, 0)], index[sim.validator_set.proposer(1, 1)]
    c, d = [i for i in range(4) if i not in (a, b)]

    def drop(source, target, message):
        if not isinstance(message, (Vote, Proposal)) or (message.height, message.round) != (1, 0):
            return False
        if target.index == b:
            return isinstance(message, Proposal) or index[signer_of(message)] == a
        return isinstance(message, Vote) and message.kind is Kind.PRECOMMIT and index[signer_of(message)] == a \
            and target.index in (c, d)

    sim.drop = drop
    sim.start()
    sim.run_until(5.0, stop=lambda: 1 in sim.nodes[a].committed)
    assert 1 in sim.nodes[a].committed
    sim.crash(a)
    sim.run_until(sim.now + 5.0)
    return sim, a


def test_lock_keeps_a_decision_that_only_a_crashed_validator_saw():
    sim, a = run_decision_only_the_crashed_validator_saw(TendermintCore)
    assert_safe(sim)
    sim.drop = None  # GST: the others may now hear the polka for v again
    sim.restart(a)
    assert sim.run_until_height(1, sim.now + 10.0), sim.describe()
    assert len({node.committed[1] for node in sim.nodes}) == 1


def test_without_locks_the_same_schedule_forks():
    sim, _ = run_decision_only_the_crashed_validator_saw(AmnesiacCore)
    assert sim.conflicts()


@settings(max_examples=5)
@given(SEEDS, st.sampled_from([4, 7]), st.floats(0.5, 5.0))
@example(seed=21076, n=7, split_for=1.5)  # an equivocating proposer's view failed after the heal
def test_random_partitions_with_byzantine_stake_heal_without_divergence(seed, n, split_for):
    rng = random.Random(seed)
    powers = [rng.randint(1, 5) for _ in range(n)]
    byzantine = byzantine_by_stake(powers, rng)
    sim = ConsensusSim(seed, powers, byzantine={i: Behaviour.EQUIVOCATE for i in byzantine},
                       network=NetworkConfig(duplicate=0.05))
    sim.start()
    sim.run_until(rng.uniform(0.05, 0.5))
    members = rng.sample(range(n), n)
    cut = rng.randint(1, n - 1)
    sim.partition([members[:cut], members[cut:]])
    sim.run_until(sim.now + split_for)
    honest = sim.honest_nodes()
    highest = max(max(node.committed, default=0) for node in honest)
    round_ = max((node.core.round for node in honest if node.core is not None and node.core.height == highest + 1),
                 default=0)
    # Three views with an honest proposer (an equivocating one's view may fail): the fuzz's bound.
    bound = fuzz.liveness_bound(SIM_CONFIG, sim.validator_set, {sim.nodes[i].key for i in byzantine},
                                highest + 1, round_)
    sim.heal()
    healed_at = sim.now
    sim.run_until(healed_at + 60.0, stop=lambda: any(highest + 1 in node.committed for node in honest))
    first = min((node.commit_times[highest + 1] for node in honest if highest + 1 in node.committed), default=None)
    assert first is not None and first - healed_at <= bound, sim.describe()
    assert sim.run_until_height(highest + 2, sim.now + 30.0), sim.describe()  # laggards catch up
    assert_safe(sim, byzantine)


def test_forged_malformed_and_replayed_messages_are_refused_and_the_chain_goes_on():
    sim = ConsensusSim(12, [1, 1, 1, 1], byzantine={0: Behaviour.FORGE})
    sim.start()
    assert sim.run_until_height(15, 30.0), sim.describe()
    assert_safe(sim, [0])
    assert sim.rejected["WireError"] > 0
    assert sim.rejected["ForgedSignature"] > 0
    assert sim.rejected["WrongHeight"] + sim.rejected["DuplicateMessage"] > 0  # replays


@pytest.mark.parametrize("behaviour, rejection", [
    (Behaviour.INVALID_PROPOSAL, "InvalidValue"),
    (Behaviour.REPLAY, "WrongHeight"),
    (Behaviour.EQUIVOCATE_PROPOSAL, "DuplicateMessage"),
    (Behaviour.DOUBLE_VOTE, None),
    (Behaviour.WITHHOLD, None),
])
def test_each_byzantine_behaviour_is_refused_or_harmless_and_the_chain_goes_on(behaviour, rejection):
    """``rejection``: what honest validators refuse of it (replays: messages of heights decided already)."""
    sim = ConsensusSim(31, [1, 1, 1, 1], byzantine={0: behaviour})
    sim.start()
    assert sim.run_until_height(12, 30.0), sim.describe()
    assert not sim.conflicts()
    assert sim.equivocators() <= {0}
    if rejection is not None:
        assert sim.rejected[rejection] > 0, sim.rejected
    if behaviour is Behaviour.DOUBLE_VOTE:
        assert sim.equivocators() == {0}  # its double votes became evidence
    if behaviour is Behaviour.INVALID_PROPOSAL:
        assert all(not v.startswith(b"invalid") for n in sim.honest_nodes() for v in n.committed.values())
