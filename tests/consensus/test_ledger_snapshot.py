"""State sync: a late node restores a chunked, hashed snapshot verified against a certified root, then follows."""

import pytest

from hypermesh.consensus.genesis import LedgerParams
from hypermesh.consensus.ledger import Ledger, certified_root
from hypermesh.consensus.ledger_tx import Bond, EscrowOpen, Role, Transfer, Unbond
from hypermesh.consensus.snapshot import ChunkMismatch, Manifest, RootMismatch, SnapshotError, SnapshotRestorer, make_snapshot
from hypermesh.consensus.validators import ValidatorSet
from hypermesh.consensus.wire import Kind, make_evidence, sign_vote
from ledger_testkit import LEDGER_CHAIN, STAKE, USER_IDS, VALIDATOR_IDS, Chain, key, make_genesis

PARAMS = LedgerParams(epoch_length=4, unbonding_period=30, max_evidence_age=20, downtime_window=3)


def busy_chain(blocks=12):
    """A chain whose state has every kind of entry: accounts, bonds, unbonding, escrow, jail, history."""
    genesis = make_genesis(params=PARAMS)
    chain = Chain(genesis)
    users = USER_IDS
    chain.run(chain.tx(users[3], Bond(Role.PROVIDER, STAKE)), chain.tx(VALIDATOR_IDS[4], Bond(Role.VALIDATOR, STAKE)))
    chain.run(chain.tx(users[0], EscrowOpen(key(users[3]), 500, 100, b"\x01" * 32)),
              chain.tx(users[3], Unbond(Role.PROVIDER, STAKE)))
    cheat = VALIDATOR_IDS[1]
    chain.ledger.add_evidence(make_evidence(sign_vote(cheat, LEDGER_CHAIN, Kind.PRECOMMIT, 1, 0, b"\x01" * 32),
                                            sign_vote(cheat, LEDGER_CHAIN, Kind.PRECOMMIT, 1, 0, b"\x02" * 32)))
    chain.commit_block()
    sleeper = key(VALIDATOR_IDS[2])
    for i in range(blocks - 3):
        absent = {sleeper} if len(chain.ledger.validators) >= 4 else set()  # only while a quorum remains
        chain.run(chain.tx(users[i % 3], Transfer(key(users[(i + 1) % 3]), 10 + i)), absent=absent)
    return chain


def test_a_late_node_restores_the_snapshot_against_the_certified_root_and_then_follows_the_chain():
    chain = busy_chain()
    source = chain.ledger
    height = 7
    replica = Ledger(chain.genesis)  # a node that replays up to the snapshot height, to snapshot from
    for commit in chain.commits[:height]:
        replica.apply_decided(commit.value, commit.certificate)
    state = replica.state
    assert state.escrows and state.unbonding and state.jailed and len(state.set_history) > 1
    manifest, chunks = make_snapshot(state, chunk_size=300)
    assert len(chunks) > 3
    # The joining node trusts only the certificate of block h + 1, checked with the validators of h + 1.
    signers = ValidatorSet(list(replica.validators.validators))
    certified_height, root = certified_root(chain.commits[height], LEDGER_CHAIN, signers)
    assert certified_height == height
    restorer = SnapshotRestorer(chain.genesis, certified_height, root, Manifest.decode(manifest.encode()))
    for index in reversed(range(len(chunks))):
        restorer.add_chunk(index, chunks[index])
    late = Ledger(chain.genesis, state=restorer.finish())
    assert late.state.root() == source.roots[height]
    for commit in chain.commits[height:]:
        late.apply_decided(commit.value, commit.certificate)
        assert late.roots[late.state.height] == source.roots[late.state.height]
    assert late.state.height == source.state.height


def test_a_tampered_chunk_is_refused_on_arrival():
    chain = busy_chain(blocks=5)
    manifest, chunks = make_snapshot(chain.ledger.state, chunk_size=200)
    restorer = SnapshotRestorer(chain.genesis, manifest.height, manifest.root, manifest)
    bad = bytearray(chunks[1])
    bad[3] ^= 1
    with pytest.raises(ChunkMismatch):
        restorer.add_chunk(1, bytes(bad))
    with pytest.raises(ChunkMismatch):
        restorer.add_chunk(len(chunks), chunks[0])
    assert 1 in restorer.missing()
    with pytest.raises(SnapshotError):
        restorer.finish()


def test_a_consistent_snapshot_of_another_state_fails_the_root_check():
    chain = busy_chain(blocks=5)
    certified = chain.ledger.state.root()
    other = chain.ledger.state.copy()
    other.burned += 1  # a lying peer: its manifest and chunks agree with each other, not with the chain
    manifest, chunks = make_snapshot(other, chunk_size=200)
    with pytest.raises(RootMismatch):
        SnapshotRestorer(chain.genesis, manifest.height, certified, manifest)
    lying = Manifest(manifest.height, certified, manifest.chunk_hashes)
    restorer = SnapshotRestorer(chain.genesis, manifest.height, certified, lying)
    for index, chunk in enumerate(chunks):
        restorer.add_chunk(index, chunk)
    with pytest.raises(RootMismatch):
        restorer.finish()


def test_a_malformed_manifest_is_refused():
    manifest, _ = make_snapshot(Chain(make_genesis()).ledger.state)
    encoded = manifest.encode()
    for bad in (b"", b"\x02" + encoded[1:], encoded + b"\x00", encoded[:-1]):
        with pytest.raises(SnapshotError):
            Manifest.decode(bad)


def test_a_kept_base_state_reads_back_and_a_damaged_one_is_refused(tmp_path):
    from hypermesh.consensus.snapshot import read_base_state, write_base_state
    chain = busy_chain(blocks=5)
    path = tmp_path / "ledger-base.state"
    write_base_state(path, chain.ledger.state)
    assert read_base_state(path, chain.genesis).root() == chain.ledger.state.root()
    data = bytearray(path.read_bytes())
    data[60] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotError):
        read_base_state(path, chain.genesis)
