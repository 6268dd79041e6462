"""Staking: bond and unbond with roles and minimums, the unbonding period, validator sets at epoch boundaries."""

import pytest

from hypermesh.consensus.genesis import Genesis, GenesisBond, LedgerParams
from hypermesh.consensus.ledger import Ledger, account_entry_key, certified_root, decode_block
from hypermesh.consensus.light_client import LightClient, LightClientError, NextSetNeeded
from hypermesh.consensus.merkle import verify_proof
from hypermesh.consensus.validators import ValidatorSet
from hypermesh.consensus.wire import Commit
from hypermesh.consensus.ledger_tx import BelowMinimumStake, Bond, InsufficientBond, Role, Unbond, sign_transaction
from hypermesh.consensus.sim import SIM_CHAIN, ConsensusSim, sim_identities
from ledger_testkit import BALANCE, STAKE, USER_IDS, VALIDATOR_IDS, Chain, key, make_genesis

EPOCH = LedgerParams(epoch_length=5, unbonding_period=600, max_evidence_age=500)
ALICE = USER_IDS[0]


def test_a_bond_below_the_minimum_is_refused_and_nothing_moves():
    chain = Chain(make_genesis())
    ledger = chain.ledger
    root, supply = ledger.state.root(), ledger.state.total_units()
    for role in Role:
        with pytest.raises(BelowMinimumStake):
            ledger.check(chain.attempt(ALICE, Bond(role, 9_999)))
    assert ledger.state.root() == root and ledger.state.total_units() == supply
    assert ledger.state.bonded(key(ALICE), Role.PROVIDER) == 0


def test_a_bond_at_the_minimum_locks_units_and_topping_up_is_allowed_below_it():
    chain = Chain(make_genesis())
    chain.run(chain.tx(ALICE, Bond(Role.PROVIDER, STAKE)))
    chain.run(chain.tx(ALICE, Bond(Role.PROVIDER, 1)))
    state = chain.ledger.state
    assert state.bonded(key(ALICE), Role.PROVIDER) == STAKE + 1
    assert state.balance(key(ALICE)) == BALANCE - STAKE - 1
    assert state.total_units() == chain.genesis.supply()


def test_unbonding_more_than_bonded_is_refused_and_nothing_moves():
    chain = Chain(make_genesis())
    ledger = chain.ledger
    validator = VALIDATOR_IDS[0]
    root = ledger.state.root()
    with pytest.raises(InsufficientBond):
        ledger.check(chain.attempt(validator, Unbond(Role.VALIDATOR, STAKE + 1)))
    with pytest.raises(InsufficientBond):
        ledger.check(chain.attempt(ALICE, Unbond(Role.PROVIDER, 1)))
    with pytest.raises(BelowMinimumStake):  # would leave a bond below the minimum
        ledger.check(chain.attempt(validator, Unbond(Role.VALIDATOR, 1)))
    assert ledger.state.root() == root
    assert ledger.state.bonded(key(validator), Role.VALIDATOR) == STAKE


def test_unbonded_units_return_only_after_the_unbonding_period():
    params = LedgerParams(unbonding_period=3, max_evidence_age=1, epoch_length=2)
    chain = Chain(make_genesis(params=params))
    chain.run(chain.tx(ALICE, Bond(Role.PROVIDER, STAKE)))
    chain.run(chain.tx(ALICE, Unbond(Role.PROVIDER, STAKE)))  # height 2: released at 5
    state = chain.ledger.state
    for _ in range(2):
        assert state.balance(key(ALICE)) == BALANCE - STAKE and state.unbonding_of(key(ALICE)) == STAKE
        chain.commit_block()
        state = chain.ledger.state
    assert state.height == 4 and state.balance(key(ALICE)) == BALANCE - STAKE
    chain.commit_block()
    state = chain.ledger.state
    assert state.balance(key(ALICE)) == BALANCE and state.unbonding_of(key(ALICE)) == 0
    assert state.total_units() == chain.genesis.supply()


def test_a_new_validator_joins_and_a_leaving_one_goes_at_the_next_epoch_boundary_with_power_from_stake():
    chain = Chain(make_genesis(params=EPOCH))
    newcomer, leaver = VALIDATOR_IDS[4], VALIDATOR_IDS[0]
    assert chain.run(chain.tx(newcomer, Bond(Role.VALIDATOR, 3 * STAKE)),
                     chain.tx(leaver, Unbond(Role.VALIDATOR, STAKE))) is None
    for _ in range(3):
        assert chain.commit_block() is None
        assert chain.ledger.validators.index_of(key(newcomer)) is None
    changed = chain.commit_block()  # height 5: the boundary
    assert changed is not None and changed is chain.ledger.validators
    assert changed.power_of(key(newcomer)) == 3 * STAKE
    assert changed.index_of(key(leaver)) is None
    assert len(changed) == 4


def _ledger_app(genesis):
    return lambda index, identity, rng: Ledger(genesis)


@pytest.fixture(scope="module")
def grown_and_shrunk():
    """4 validators, 3 more bond and join at an epoch boundary, then unbond and leave: (sim, genesis, heights
    at which the set had grown and shrunk back)."""
    seed = 7
    identities = sim_identities(seed, 7)
    genesis = Genesis(SIM_CHAIN, EPOCH, {key(i): BALANCE for i in identities},
                      tuple(GenesisBond(key(i), Role.VALIDATOR, STAKE) for i in identities[:4]))
    sim = ConsensusSim(seed, [STAKE] * 4 + [0] * 3, app_factory=_ledger_app(genesis))
    sim.start()

    def submit_everywhere(identity, body):
        tx = sign_transaction(identity, SIM_CHAIN, sim.nodes[0].app.state.nonce(key(identity)), body)
        for node in sim.nodes:
            node.app.submit(tx)

    def validator_count():
        return len(sim.nodes[0].app.validators)

    assert sim.run_until_height(2, limit=30)
    for identity in identities[4:]:
        submit_everywhere(identity, Bond(Role.VALIDATOR, STAKE))
    assert sim.run_until_height(12, limit=120)
    assert validator_count() == 7
    # A quorum of 7 equal validators is 5 signatures: joiners vote in the certificates.
    assert len(sim.nodes[0].app.last_certificate.signatures) >= 5
    grown_at = sim.nodes[0].app.state.height
    for identity in identities[4:]:
        submit_everywhere(identity, Unbond(Role.VALIDATOR, STAKE))
    assert sim.run_until_height(grown_at + 12, limit=300)
    assert validator_count() == 4
    shrunk_at = sim.nodes[0].app.state.height
    assert sim.run_until_height(grown_at + 15, limit=400), sim.describe()
    return sim, genesis, grown_at, shrunk_at


def test_the_validator_set_grows_from_4_to_7_and_shrinks_back_in_the_consensus_simulator_without_halting(
        grown_and_shrunk):
    sim, genesis, _, _ = grown_and_shrunk
    assert not sim.conflicts()
    final = sim.nodes[0].app.state.height
    roots = {n.app.roots[final] for n in sim.nodes if final in n.app.roots}
    assert len(roots) == 1
    assert all(n.app.state.total_units() == genesis.supply() for n in sim.nodes)


def _commits(node) -> list[Commit]:
    """Every decided block with its commit certificate (carried by the block after it)."""
    heights = sorted(node.committed)
    return [Commit(decode_block(node.committed[h + 1]).last_certificate, node.committed[h])
            for h in heights if h + 1 in node.committed]


def test_a_light_client_follows_the_set_from_4_to_7_and_back_from_certified_blocks_alone(grown_and_shrunk):
    sim, genesis, grown_at, shrunk_at = grown_and_shrunk
    node = sim.nodes[0]
    known_sets = {validators.digest(): validators for _, validators in node.app.state.set_history}
    client = LightClient(SIM_CHAIN, Ledger(genesis).validators)
    handovers = []
    for commit in _commits(node):
        try:
            client.advance(commit)
        except NextSetNeeded as needed:
            with pytest.raises(LightClientError):  # a set the block does not name is refused
                client.advance(commit, ValidatorSet(known_sets[needed.digest].validators[1:]))
            client.advance(commit, known_sets[needed.digest])
            handovers.append((needed.height, len(client.validators)))
    assert [size for _, size in handovers] == [7, 4]
    assert handovers[0][0] < grown_at and grown_at <= handovers[1][0] < shrunk_at + 1
    # The node's latest decision certifies the state before it: its Merkle proof of an account checks
    # out against the set the client followed to.
    latest = max(node.committed)
    assert client.height == latest - 1
    height, root = certified_root(Commit(node.app.last_certificate, node.committed[latest]), SIM_CHAIN,
                                  client.validators)
    assert height == client.height
    account = account_entry_key(key(sim_identities(7, 1)[0]))
    value, proof = node.app.certified[0].tree().prove(account)
    verify_proof(root, account, value, proof)


def test_a_stake_above_the_largest_voting_power_counts_as_that_power_and_the_chain_goes_on():
    from hypermesh.consensus.validators import MAX_POWER
    whale = VALIDATOR_IDS[5]
    genesis = make_genesis(params=EPOCH)
    genesis = type(genesis)(genesis.chain_id, genesis.params, {**genesis.balances, key(whale): 2 * MAX_POWER},
                            genesis.bonds)
    chain = Chain(genesis)
    chain.run(chain.tx(whale, Bond(Role.VALIDATOR, MAX_POWER + 1)))
    for _ in range(4):
        chain.commit_block()  # through the epoch boundary at 5
    assert chain.ledger.validators.power_of(key(whale)) == MAX_POWER
    assert chain.ledger.state.bonded(key(whale), Role.VALIDATOR) == MAX_POWER + 1


def test_bonded_stake_by_peer_id_is_what_the_trust_engine_takes():
    chain = Chain(make_genesis())
    chain.run(chain.tx(ALICE, Bond(Role.PROVIDER, STAKE)))
    stake = chain.ledger.bonded_stake()
    assert stake[ALICE.peer_id] == STAKE
    assert stake[VALIDATOR_IDS[0].peer_id] == STAKE and len(stake) == 5
