"""Record stores: caps, expiry, persistence across reopen and kill -9."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from hypermesh.dht.messages import PeerInfo
from hypermesh.dht.store import MemoryRecordStore, SqliteRecordStore, StoreLimits
from hypermesh.transport.identity import Identity

PEERS = [Identity.from_seed(b"p%d" % i).peer_id for i in range(5)]
KEY = b"\x12\x20" + b"k" * 32


@pytest.fixture(params=["memory", "sqlite"])
def make_store(request, tmp_path):
    opened = []

    def make(limits=StoreLimits()):
        store = MemoryRecordStore(limits) if request.param == "memory" else SqliteRecordStore(tmp_path, limits)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def test_providers_expire_and_are_capped(make_store):
    store = make_store(StoreLimits(max_providers_per_key=3))
    for i, peer in enumerate(PEERS[:3]):
        assert store.add_provider(KEY, peer, (b"a%d" % i,), expires_at=100.0 + i, now=0.0)
    assert not store.add_provider(KEY, PEERS[3], (), expires_at=500.0, now=0.0)
    assert store.add_provider(KEY, PEERS[0], (), expires_at=900.0, now=0.0)  # refresh is not a new slot
    assert {p.peer_id for p in store.get_providers(KEY, 50.0, 10)} == set(PEERS[:3])
    assert {p.peer_id for p in store.get_providers(KEY, 101.5, 10)} == {PEERS[0], PEERS[2]}
    assert store.add_provider(KEY, PEERS[3], (), expires_at=500.0, now=102.0)  # expired slots free up
    assert len(store.get_providers(KEY, 102.0, 1)) == 1


def test_values_expire_and_total_cap(make_store):
    store = make_store(StoreLimits(max_value_records=2))
    assert store.put_value(b"/a", b"1", 10.0, 0.0) and store.put_value(b"/b", b"2", 10.0, 0.0)
    assert not store.put_value(b"/c", b"3", 10.0, 0.0)
    assert store.put_value(b"/a", b"4", 10.0, 0.0)
    assert store.get_value(b"/a", 5.0) == b"4" and store.get_value(b"/a", 11.0) is None
    assert store.collect_garbage(11.0) == 2
    assert store.put_value(b"/c", b"3", 20.0, 12.0)


def test_local_provides_and_sequences(make_store):
    store = make_store()
    store.add_local_provides([b"x", b"y"], 0.0)
    store.mark_published([b"x"], 50.0)
    assert store.local_provides() == {b"x": 50.0, b"y": 0.0}
    first = store.next_sequence("svc", 1000.0)
    assert store.next_sequence("svc", 999.0) == first + 1  # the clock stepped back


def test_sqlite_survives_reopen(tmp_path):
    store = SqliteRecordStore(tmp_path)
    store.add_provider(KEY, PEERS[0], (b"addr",), 100.0, 0.0)
    store.put_value(b"/pk/x", b"v", 100.0, 0.0)
    store.add_local_provides([KEY], 0.0)
    store.save_peers([PeerInfo(PEERS[1], (b"a1", b"a2"))])
    seq = store.next_sequence("svc", 5.0)
    store.close()
    reopened = SqliteRecordStore(tmp_path)
    assert reopened.get_providers(KEY, 1.0, 5) == [PeerInfo(PEERS[0], (b"addr",))]
    assert reopened.get_value(b"/pk/x", 1.0) == b"v"
    assert KEY in reopened.local_provides()
    assert reopened.load_peers() == [PeerInfo(PEERS[1], (b"a1", b"a2"))]
    assert reopened.next_sequence("svc", 5.0) == seq + 1
    reopened.close()


def test_sqlite_survives_kill_9(tmp_path):
    script = textwrap.dedent(
        f"""
        import os, sys
        from hypermesh.dht.store import SqliteRecordStore
        from hypermesh.transport.identity import Identity
        store = SqliteRecordStore({str(tmp_path)!r})
        peer = Identity.from_seed(b"p0").peer_id
        for i in range(200):
            store.add_provider(b"\\x12\\x20" + i.to_bytes(32, "big"), peer, (), 1e12, 0.0)
        store.add_local_provides([b"mine"], 0.0)
        print("written", flush=True)
        os.kill(os.getpid(), {int(signal.SIGKILL)})
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert completed.returncode == -signal.SIGKILL and "written" in completed.stdout
    store = SqliteRecordStore(tmp_path)
    assert all(store.get_providers(b"\x12\x20" + i.to_bytes(32, "big"), 1.0, 1) for i in range(200))
    assert b"mine" in store.local_provides()
    store.close()
    assert os.path.exists(tmp_path / "dht.sqlite3")
