"""The signer state on disk: SQLite round trips, and a real validator process killed with SIGKILL."""

import contextlib
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
from hypermesh.consensus.wire import (
    Commit, DuplicateMessage, Kind, Proposal, Vote, WrongHeight, block_id_of, decode_message, encode_message,
    make_certificate, sign_vote, signer_of, verify_commit,
)

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


def test_the_end_of_the_commit_wait_writes_nothing_when_nothing_is_signed_and_a_restart_resumes_there():
    """Round 0 of the next height is saved with the decision: saving it again when the commit wait ended
    was a store write a height for nothing (the proposer still saves its proposal and prevote, above)."""
    me = next(i for i in IDENTITIES if i not in (proposer_of(1, 0), proposer_of(2, 0)))
    store = CountingStore()
    core = new_core(me, store)
    others = [i for i in IDENTITIES if i is not me]
    feed(core, [proposal(1, 0, b"one")] + votes(Kind.PREVOTE, 1, 0, b"one", others[:2])
         + votes(Kind.PRECOMMIT, 1, 0, b"one", others[:2]))
    assert core.height == 2 and store.last_commit_height() == 1
    writes = store.writes
    core.handle_timer(core.config.timeout_commit)  # the commit wait is over: height 2, round 0 starts
    assert (core.height, core.round) == (2, 0) and store.writes == writes
    restarted = new_core(me, store)
    assert (restarted.height, restarted.round) == (2, 0)


_STEP_OF = {Kind.PREVOTE: 1, Kind.PRECOMMIT: 2}


def test_every_signed_message_is_synced_before_it_leaves_and_a_validator_syncs_twice_a_height(tmp_path):
    """Four cores on SQLite stores, their messages delivered in memory: whatever a core hands out that it
    signed is covered by its store's last synced write (privval's rule); decisions of heights where a
    validator signed nothing new in that call are not synced on their own, so a height costs two syncs
    (prevote, precommit; a proposer's proposal goes with its prevote), not three."""
    for i in range(4):
        (tmp_path / f"v{i}").mkdir()
    stores = [SqliteConsensusStore(tmp_path / f"v{i}") for i in range(4)]
    cores = [new_core(identity, store) for identity, store in zip(IDENTITIES, stores)]
    queue = []

    def take(index):
        durable = stores[index].synced_state
        for out in cores[index].take_outbound():
            message = out.message
            if signer_of(message) == KEYS[index]:
                step = 0 if isinstance(message, Proposal) else _STEP_OF[message.kind]
                assert (message.height, message.round, step) <= durable.last_signed
                if isinstance(message, Vote) and message.kind == Kind.PRECOMMIT and message.block_id is not None \
                        and message.height == durable.height:
                    assert durable.locked_value is not None
            queue.append((index, message))

    for index in range(4):
        take(index)
    now = 0.0
    for _ in range(5000):  # bounded: ten heights take a few hundred deliveries
        if min(core.height for core in cores) > 10:
            break
        if not queue:  # nothing in flight: the earliest timer (the commit wait between heights) fires
            now = max(now, min(core.get_timer() for core in cores))
            for index, core in enumerate(cores):
                if core.get_timer() <= now:
                    core.handle_timer(now)
                    take(index)
            continue
        sender, message = queue.pop(0)
        for index, core in enumerate(cores):
            if index != sender:
                with contextlib.suppress(DuplicateMessage, WrongHeight):  # refused, as on the wire
                    core.handle_message(KEYS[sender], message, now)
                take(index)
    heights = min(core.height for core in cores) - 1
    assert heights >= 10
    synced = sum(store.synced_writes for store in stores)
    assert synced <= 2 * 4 * (heights + 1), f"{synced} synced writes for {heights} heights of 4 validators"
    for store in stores:
        store.close()
