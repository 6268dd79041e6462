"""Slashing: double-sign evidence burns a share of stake and jails for good; downtime jails for a while."""

import pytest

from hypermesh.consensus.genesis import Genesis, GenesisBond, LedgerParams
from hypermesh.consensus.ledger import Ledger, decode_block
from hypermesh.consensus.ledger_tx import InvalidSlashingEvidence, NotJailed, Role, StillJailed, Unbond, Unjail
from hypermesh.consensus.sim import SIM_CHAIN, Behaviour, ConsensusSim, sim_identities
from hypermesh.consensus.wire import Evidence, Kind, make_evidence, sign_vote
from ledger_testkit import BALANCE, LEDGER_CHAIN, STAKE, USER_IDS, VALIDATOR_IDS, Chain, key, make_genesis

CHEAT = VALIDATOR_IDS[0]


def double_sign(identity, height, chain_id=LEDGER_CHAIN):
    first = sign_vote(identity, chain_id, Kind.PRECOMMIT, height, 0, b"\x01" * 32)
    second = sign_vote(identity, chain_id, Kind.PRECOMMIT, height, 0, b"\x02" * 32)
    return make_evidence(first, second)


def test_double_sign_evidence_burns_five_percent_jails_for_good_and_removes_the_validator_at_once():
    chain = Chain(make_genesis(), nodes=2)
    chain.commit_block()
    for ledger in chain.ledgers:
        ledger.add_evidence(double_sign(CHEAT, 1))
    changed = chain.commit_block()
    state = chain.ledger.state
    assert decode_block(chain.commits[-1].value).evidence == (double_sign(CHEAT, 1),)
    assert state.bonded(key(CHEAT), Role.VALIDATOR) == STAKE - STAKE * 500 // 10_000
    assert state.burned == STAKE * 500 // 10_000
    assert state.total_units() == chain.genesis.supply()
    assert key(CHEAT) in state.jailed and key(CHEAT) in state.tombstoned
    assert changed is not None and changed.index_of(key(CHEAT)) is None and len(changed) == 3
    assert chain.ledgers[1].state.root() == state.root()
    # Not slashed twice; and a tombstoned validator cannot unjail.
    with pytest.raises(InvalidSlashingEvidence):
        state.copy().apply_evidence(double_sign(CHEAT, 1), state.height + 1)
    chain.commit_block()
    assert decode_block(chain.commits[-1].value).evidence == ()
    with pytest.raises(StillJailed):
        chain.ledger.check(chain.attempt(CHEAT, Unjail()))


def test_unbonding_stake_is_still_slashed():
    chain = Chain(make_genesis())
    chain.run(chain.tx(CHEAT, Unbond(Role.VALIDATOR, STAKE)))
    assert chain.ledger.state.unbonding_of(key(CHEAT)) == STAKE
    chain.ledger.add_evidence(double_sign(CHEAT, 1))
    chain.commit_block()
    state = chain.ledger.state
    assert state.unbonding_of(key(CHEAT)) == STAKE - STAKE // 20
    assert state.burned == STAKE // 20 and state.total_units() == chain.genesis.supply()


@pytest.mark.parametrize("evidence", [
    double_sign(USER_IDS[0], 1),  # not a validator
    double_sign(CHEAT, 1, chain_id="another-chain"),
    double_sign(CHEAT, 5),  # from the future
    Evidence(sign_vote(CHEAT, LEDGER_CHAIN, Kind.PRECOMMIT, 1, 0, b"\x01" * 32),
             sign_vote(VALIDATOR_IDS[1], LEDGER_CHAIN, Kind.PRECOMMIT, 1, 0, b"\x02" * 32)),
])
def test_evidence_that_proves_no_double_signing_is_refused_and_slashes_nobody(evidence):
    chain = Chain(make_genesis())
    chain.commit_block()
    state = chain.ledger.state
    with pytest.raises(InvalidSlashingEvidence):
        state.copy().apply_evidence(evidence, 2)
    chain.ledger.add_evidence(evidence)
    chain.commit_block()
    assert decode_block(chain.commits[-1].value).evidence == ()
    assert chain.ledger.state.burned == 0 and not chain.ledger.state.jailed


def test_downtime_jails_after_the_window_without_slashing_and_unjailing_waits_for_the_jail_period():
    params = LedgerParams(downtime_window=3, jail_period=4, epoch_length=10)
    chain = Chain(make_genesis(params=params))
    sleeper = VALIDATOR_IDS[3]
    chain.commit_block()  # block 1 carries no certificate
    for _ in range(2):  # blocks 2 and 3 carry certificates 1 and 2 without it
        chain.commit_block(absent={key(sleeper)})
        assert key(sleeper) not in chain.ledger.state.jailed
    chain.commit_block(absent={key(sleeper)})
    changed = chain.commit_block()  # block 5 carries certificate 4: the third miss in a row
    state = chain.ledger.state
    assert state.jailed == {key(sleeper): 5 + 4}
    assert changed.index_of(key(sleeper)) is None
    assert state.bonded(key(sleeper), Role.VALIDATOR) == STAKE and state.burned == 0
    with pytest.raises(StillJailed):
        chain.ledger.check(chain.attempt(sleeper, Unjail()))
    with pytest.raises(NotJailed):
        chain.ledger.check(chain.attempt(VALIDATOR_IDS[0], Unjail()))
    while chain.ledger.state.height < 8:
        chain.commit_block()
    chain.run(chain.tx(sleeper, Unjail()))  # block 9
    assert not chain.ledger.state.jailed
    assert chain.commit_block() is not None  # block 10, the epoch boundary: back in the set
    assert chain.ledger.validators.index_of(key(sleeper)) is not None


@pytest.mark.parametrize("behaviour", [Behaviour.EQUIVOCATE, Behaviour.EQUIVOCATE_PROPOSAL])
def test_a_validator_that_double_signs_in_the_simulator_is_slashed_and_jailed_and_the_chain_goes_on(behaviour):
    """Two votes, or (EQUIVOCATE_PROPOSAL) two proposals for one round: evidence, carried in a block, slashed."""
    seed = 3
    identities = sim_identities(seed, 4)
    genesis = Genesis(SIM_CHAIN, LedgerParams(), {key(i): BALANCE for i in identities},
                      tuple(GenesisBond(key(i), Role.VALIDATOR, STAKE) for i in identities))
    sim = ConsensusSim(seed, [STAKE] * 4, byzantine={0: behaviour},
                       app_factory=lambda index, identity, rng: Ledger(genesis))
    cheat = key(identities[0])
    sim.start()
    # Each honest node pools the evidence it detects or is relayed for its proposals, as ledger_node.py does.
    for height in range(2, 40):
        assert sim.run_until_height(height, limit=20.0 * height), sim.describe()
        if cheat in sim.nodes[1].app.state.tombstoned:
            break
    honest = sim.nodes[1].app
    carried = [e for value in sim.nodes[1].committed.values() for e in decode_block(value).evidence]
    assert carried and all(e.first.validator == cheat for e in carried)
    assert cheat in honest.state.tombstoned and honest.state.burned == STAKE // 20
    assert honest.validators.index_of(cheat) is None
    assert sim.run_until_height(honest.state.height + 3, limit=sim.now + 30), sim.describe()
    assert not sim.conflicts()
    assert all(n.app.state.total_units() == genesis.supply() for n in sim.honest_nodes())
