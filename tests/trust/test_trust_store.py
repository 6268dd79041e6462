"""Trust state survives restarts and kill -9 in a real SQLite file."""

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from hypermesh.transport.identity import Identity
from hypermesh.trust.attestation import sign_attestation
from hypermesh.trust.engine import Observation, Proof, TrustEngine
from hypermesh.trust.score import Dimension
from hypermesh.trust.store import FILE_NAME, TrustStore, TrustStoreError

NOW = 1_800_000_000.0
ME = Identity.from_seed(b"me").peer_id
PEER = Identity.from_seed(b"peer").peer_id
CHEAT = Identity.from_seed(b"cheat").peer_id
REVIEWER = Identity.from_seed(b"reviewer")


def test_evidence_reviews_and_shuns_survive_a_restart(tmp_path):
    engine = TrustEngine(ME)
    store = TrustStore.in_data_dir(tmp_path)
    for _ in range(4):
        engine.observe(PEER, Observation.RECEIPT_VERIFIED, NOW)
    engine.observe(PEER, Observation.PROBE_DOWN, NOW)
    review = sign_attestation(REVIEWER, PEER, 7, 1, int(NOW * 1000), 3)
    engine.accept_attestation(review, REVIEWER.peer_id, NOW)
    engine.prove(CHEAT, Proof.FORGED_RECEIPT, NOW)
    engine.shun(PEER, "temporary", NOW, seconds=10)
    engine.unshun(PEER)
    store.save(engine.take_changes())
    store.close()

    restored = TrustEngine(ME)
    assert TrustStore.in_data_dir(tmp_path).load(restored, NOW + 1) == 0
    assert restored.reputation(PEER, NOW + 1).components == pytest.approx(engine.reputation(PEER, NOW + 1).components)
    assert restored.is_shunned(CHEAT, NOW + 1) and not restored.is_shunned(PEER, NOW + 1)
    assert list(restored.attestations()) == [review]
    # The replay counter came back with the review.
    with pytest.raises(Exception, match="replayed"):
        restored.accept_attestation(review, REVIEWER.peer_id, NOW + 1)


def test_a_tampered_saved_review_is_skipped_not_trusted(tmp_path):
    engine = TrustEngine(ME)
    store = TrustStore.in_data_dir(tmp_path)
    engine.accept_attestation(sign_attestation(REVIEWER, PEER, 7, 1, int(NOW * 1000), 1), REVIEWER.peer_id, NOW)
    store.save(engine.take_changes())
    store.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        (encoded,) = db.execute("SELECT encoded FROM attestations").fetchone()
        db.execute("UPDATE attestations SET encoded = ?", (encoded[:-1] + bytes([encoded[-1] ^ 1]),))
    restored = TrustEngine(ME)
    assert TrustStore.in_data_dir(tmp_path).load(restored, NOW) == 1
    assert list(restored.attestations()) == []


def test_a_store_from_a_newer_node_is_refused_with_its_path(tmp_path):
    store = TrustStore.in_data_dir(tmp_path)
    store.close()
    with sqlite3.connect(tmp_path / FILE_NAME) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(TrustStoreError, match="newer"):
        TrustStore.in_data_dir(tmp_path)


WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from hypermesh.transport.identity import Identity
    from hypermesh.trust.engine import Observation, TrustEngine
    from hypermesh.trust.store import TrustStore

    engine = TrustEngine(Identity.from_seed(b"me").peer_id)
    store = TrustStore.in_data_dir(Path(sys.argv[1]))
    peer = Identity.from_seed(b"peer").peer_id
    for step in range(1, 100_000):
        engine.observe(peer, Observation.RECEIPT_VERIFIED, 0.0)
        engine.observe(peer, Observation.PROBE_UP, 0.0)
        store.save(engine.take_changes())
        if step == 20:
            print("ready", flush=True)
    """
)


def test_kill_9_mid_write_leaves_a_store_that_loads_consistently(tmp_path):
    process = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
    )
    try:
        assert process.stdout.readline().strip() == "ready"
    finally:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    restored = TrustEngine(ME)
    assert TrustStore.in_data_dir(tmp_path).load(restored, 0.0) == 0
    record = restored.evidence(PEER, 0.0)
    good_performance, _ = record.counts(Dimension.PERFORMANCE, 0.0, 1.0)
    good_uptime, _ = record.counts(Dimension.UPTIME, 0.0, 1.0)
    # Both observations of a step are saved in one transaction: never one without the other.
    assert good_performance == good_uptime >= 20
