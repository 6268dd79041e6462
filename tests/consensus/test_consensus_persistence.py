"""The signer state on disk: SQLite round trips, and a real validator process killed with SIGKILL."""

import random
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from consensus_testkit import CHAIN, IDENTITIES, KEYS, VALIDATORS, feed, new_core, proposal, proposer_of, votes
from hypermesh.consensus.sqlite_store import SqliteConsensusStore, StoreFormatError
from hypermesh.consensus.store import MemoryConsensusStore, SavedState
from hypermesh.consensus.tendermint import Committed
from hypermesh.consensus.wire import (Commit, Kind, Proposal, Vote, block_id_of, decode_message, encode_message,
                                     make_certificate, sign_vote, signer_of, verify_commit)

HELPER = Path(__file__).parent / "consensus_validator_proc.py"


def test_saved_state_and_commits_round_trip_through_sqlite(tmp_path):
    store = SqliteConsensusStore(tmp_path)
    own = tuple(encode_message(v) for v in votes(Kind.PREVOTE, 3, 1, b"v", IDENTITIES[:1]))
    state = SavedState(3, 1, 0, b"locked", 1, b"valid", (3, 1, 1), own, own)
    store.save_state(state)
    store.close()
    reopened = SqliteConsensusStore(tmp_path)
    assert reopened.load_state() == state
    assert reopened.last_commit_height() == 0


def test_blocks_rest_compressed_and_a_store_of_another_format_is_refused_with_its_remedy(tmp_path):
    value = b"a block whose transactions repeat the same keys; " * 100
    certificate = make_certificate([sign_vote(i, CHAIN, Kind.PRECOMMIT, 1, 0, block_id_of(value))
                                    for i in IDENTITIES[:3]], VALIDATORS)
    store = SqliteConsensusStore(tmp_path)
    store.save_commit(Commit(certificate, value))
    store.close()
    reopened = SqliteConsensusStore(tmp_path)
    assert reopened.load_commit(1) == Commit(certificate, value)
    reopened.close()
    db = sqlite3.connect(tmp_path / "consensus.sqlite3")
    (stored,) = db.execute("SELECT value FROM commits").fetchone()
    assert len(stored) < len(value) // 4
    db.execute("PRAGMA user_version=0")  # as a store written before the format was recorded
    db.commit()
    db.close()
    with pytest.raises(StoreFormatError, match="sync again"):
        SqliteConsensusStore(tmp_path)


def test_restart_on_sqlite_resumes_height_round_and_lock(tmp_path):
    me = IDENTITIES[3]
    store = SqliteConsensusStore(tmp_path)
    core = new_core(me, store)
    others = [i for i in IDENTITIES if i is not me]
    feed(core, [proposal(1, 0, b"one")] + votes(Kind.PREVOTE, 1, 0, b"one", others[:2])
         + votes(Kind.PRECOMMIT, 1, 0, b"one", others[:2]))
    [committed] = [e for e in core.take_events() if isinstance(e, Committed)]
    store.close()
    reopened = SqliteConsensusStore(tmp_path)
    verify_commit(reopened.load_commit(1), CHAIN, VALIDATORS)
    restarted = new_core(me, reopened)
    assert restarted.height == 2 and committed.value == b"one"


def signed_by_me(lines):
    me = KEYS[0]
    for line in lines:
        message = decode_message(bytes.fromhex(line))
        if signer_of(message) == me:
            yield message


def test_validator_killed_with_sigkill_never_signs_conflicting_messages(tmp_path):
    rng = random.Random(7)
    lines = []
    for incarnation in range(12):
        process = subprocess.Popen([sys.executable, str(HELPER), str(tmp_path), str(incarnation)],
                                   stdout=subprocess.PIPE, text=True)
        try:
            for _ in range(rng.randint(5, 120)):
                line = process.stdout.readline()
                assert line, f"validator process exited early with {process.poll()}"
                lines.append(line.strip())
        finally:
            process.kill()  # SIGKILL: no clean-up, no flush beyond what was written
            process.wait()
        lines.extend(line.strip() for line in process.stdout.read().splitlines())  # written before it died
        process.stdout.close()
    signed: dict[tuple, bytes | None] = {}
    for message in signed_by_me(lines):
        kind = "proposal" if isinstance(message, Proposal) else message.kind
        key = (message.height, message.round, kind)
        assert signed.setdefault(key, message.block_id) == message.block_id, f"signed twice differently at {key}"
    heights = {height for height, _, _ in signed}
    assert len(heights) > 1, "the validator made no progress across restarts"


def test_killed_between_decision_and_next_height_resumes_at_the_next_height(tmp_path):
    me = IDENTITIES[3]
    store = SqliteConsensusStore(tmp_path)
    core = new_core(me, store)
    core.handle_timer(core.get_timer())  # prevote nil at height 1, round 0
    stale_state = store.load_state()
    others = [i for i in IDENTITIES if i is not me]
    feed(core, [proposal(1, 1, b"one")] + votes(Kind.PRECOMMIT, 1, 1, b"one", others), now=5.0)
    assert store.last_commit_height() == 1
    store.save_state(stale_state)  # as if killed after the decision was saved, before the next height's state
    restarted = new_core(me, store)
    assert restarted.height == 2
    restarted.handle_timer(restarted.get_timer())
    assert [(m.height, m.block_id) for m in (o.message for o in restarted.take_outbound())
            if isinstance(m, Vote)] == [(2, None)]


class CountingStore(MemoryConsensusStore):
    """Counts durable writes (each one a sync on SQLite)."""

    def __init__(self):
        super().__init__()
        self.writes = 0

    def save_state(self, state):
        self.writes += 1
        super().save_state(state)

    def save_commit(self, commit, state=None):
        self.writes += 1
        super().save_commit(commit, state)


def test_a_decision_and_then_the_next_proposal_and_prevote_are_each_saved_in_one_write_before_they_leave():
    next_proposer = proposer_of(2, 0)
    store = CountingStore()
    core = new_core(next_proposer, store)
    core.take_outbound()
    others = [i for i in IDENTITIES if i is not next_proposer]
    feed(core, [proposal(1, 0, b"one")] + votes(Kind.PREVOTE, 1, 0, b"one", others))
    core.take_outbound()
    for precommit in votes(Kind.PRECOMMIT, 1, 0, b"one", others):
        writes = store.writes
        core.handle_message(signer_of(precommit), precommit, 0.0)
        if core.height == 2:
            break
    assert store.writes - writes == 1  # the decision and the next height's state: one write
    assert store.last_commit_height() == 1
    writes = store.writes
    core.handle_timer(core.config.timeout_commit)  # the commit wait is over: height 2 starts
    assert store.writes - writes == 1  # the next proposal and our prevote: one write
    sent = [o.message for o in core.take_outbound()]
    own = [m for m in sent if signer_of(m) == KEYS[IDENTITIES.index(next_proposer)] and m.height == 2]
    assert {type(m) for m in own} == {Proposal, Vote}  # the proposal of height 2 and our prevote for it
    assert store.last_commit_height() == 1
    saved = store.load_state()
    assert saved.height == 2 and {encode_message(m) for m in own} <= set(saved.own_messages)
