"""Record storage: provider records, value records, our own provides, known peers.

Two implementations of one interface: :class:`SqliteRecordStore` for a real
node (embedded SQLite under the data directory, WAL journal, so records
survive restarts and ``kill -9``) and :class:`MemoryRecordStore` for the
simulator, where ten thousand SQLite files would measure the disk instead of
the protocol. Every method takes ``now``: the store never reads a clock.

Caps bound what remote peers can make us keep: providers per key, provider
records in total and value records in total. Our own state (local provides,
sequence numbers, known peers) is not capped by them.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hypermesh.transport.identity import IdentityError, PeerId

from .messages import PeerInfo

STORE_FILE_NAME = "dht.sqlite3"


@dataclass(frozen=True, slots=True)
class StoreLimits:
    # go-libp2p-kad-dht keeps any number; a popular key with thousands of
    # providers is still served well by the first hundred, and an attacker
    # cannot grow one key without bound.
    max_providers_per_key: int = 100
    max_provider_records: int = 1_000_000
    max_value_records: int = 100_000
    # Peers remembered for bootstrapping after a restart.
    max_saved_peers: int = 200


def _next_sequence(previous: int, now: float) -> int:
    # Milliseconds since the epoch keep sequence numbers increasing even if
    # the store is lost; the stored value keeps them increasing if the clock
    # steps back.
    return max(previous + 1, int(now * 1000))


class MemoryRecordStore:
    def __init__(self, limits: StoreLimits = StoreLimits()):
        self.limits = limits
        self._providers: dict[bytes, dict[PeerId, tuple[tuple[bytes, ...], float]]] = {}
        self._provider_count = 0
        self._values: dict[bytes, tuple[bytes, float]] = {}
        self._local: dict[bytes, float] = {}
        self._peers: list[PeerInfo] = []
        self._sequences: dict[str, int] = {}

    def add_provider(self, key: bytes, provider: PeerId, addrs: tuple[bytes, ...], expires_at: float, now: float) -> bool:
        providers = self._providers.setdefault(key, {})
        if provider not in providers:
            if len(providers) >= self.limits.max_providers_per_key:
                self._drop_expired_providers(key, now)
                if len(providers) >= self.limits.max_providers_per_key:
                    return False
            if self._provider_count >= self.limits.max_provider_records:
                return False
            self._provider_count += 1
        providers[provider] = (addrs, expires_at)
        return True

    def _drop_expired_providers(self, key: bytes, now: float) -> None:
        providers = self._providers.get(key, {})
        for peer_id in [p for p, (_, expiry) in providers.items() if expiry <= now]:
            del providers[peer_id]
            self._provider_count -= 1

    def get_providers(self, key: bytes, now: float, limit: int) -> list[PeerInfo]:
        providers = self._providers.get(key, {})
        live = [PeerInfo(p, addrs) for p, (addrs, expiry) in providers.items() if expiry > now]
        return live[:limit]

    def put_value(self, key: bytes, value: bytes, expires_at: float, now: float) -> bool:
        if key not in self._values and len(self._values) >= self.limits.max_value_records:
            return False
        self._values[key] = (value, expires_at)
        return True

    def get_value(self, key: bytes, now: float) -> bytes | None:
        stored = self._values.get(key)
        if stored is None or stored[1] <= now:
            return None
        return stored[0]

    def add_local_provides(self, keys: list[bytes], now: float) -> None:
        for key in keys:
            self._local.setdefault(key, 0.0)

    def remove_local_provide(self, key: bytes) -> None:
        self._local.pop(key, None)

    def local_provides(self) -> dict[bytes, float]:
        """Our provided keys and when each was last published (0 = never)."""
        return dict(self._local)

    def mark_published(self, keys: list[bytes], now: float) -> None:
        for key in keys:
            if key in self._local:
                self._local[key] = now

    def save_peers(self, peers: list[PeerInfo]) -> None:
        self._peers = list(peers[: self.limits.max_saved_peers])

    def load_peers(self) -> list[PeerInfo]:
        return list(self._peers)

    def next_sequence(self, name: str, now: float) -> int:
        sequence = _next_sequence(self._sequences.get(name, 0), now)
        self._sequences[name] = sequence
        return sequence

    def collect_garbage(self, now: float) -> int:
        removed = 0
        for key in list(self._providers):
            before = len(self._providers[key])
            self._drop_expired_providers(key, now)
            removed += before - len(self._providers[key])
            if not self._providers[key]:
                del self._providers[key]
        for key in [k for k, (_, expiry) in self._values.items() if expiry <= now]:
            del self._values[key]
            removed += 1
        return removed

    def close(self) -> None:
        pass


def _encode_addrs(addrs: tuple[bytes, ...]) -> bytes:
    # Length-prefixed concatenation: addresses are at most 256 bytes each.
    return b"".join(len(a).to_bytes(2, "big") + a for a in addrs)


def _decode_addrs(blob: bytes) -> tuple[bytes, ...]:
    addrs, offset = [], 0
    while offset + 2 <= len(blob):
        length = int.from_bytes(blob[offset : offset + 2], "big")
        addrs.append(bytes(blob[offset + 2 : offset + 2 + length]))
        offset += 2 + length
    return tuple(addrs)


SCHEMA = """
CREATE TABLE IF NOT EXISTS providers (
    key BLOB NOT NULL, provider BLOB NOT NULL, addrs BLOB NOT NULL, expires_at REAL NOT NULL,
    PRIMARY KEY (key, provider)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS providers_expiry ON providers (expires_at);
CREATE TABLE IF NOT EXISTS ivalues (
    key BLOB PRIMARY KEY, value BLOB NOT NULL, expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS local_provides (
    key BLOB PRIMARY KEY, last_published REAL NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS known_peers (peer BLOB PRIMARY KEY, addrs BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS sequences (name TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID;
"""


class SqliteRecordStore:
    """The node's persistent record store, one SQLite file in the data directory.

    WAL with ``synchronous=NORMAL``: a committed transaction survives the
    process being killed at any point; only a power loss can drop the last
    few commits, which republishing repairs. Every write is its own short
    transaction, so there is never a half-applied update to recover from.
    """

    def __init__(self, data_dir: Path | str, limits: StoreLimits = StoreLimits()):
        self.limits = limits
        self.path = Path(data_dir) / STORE_FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA)
        self._provider_count = self._db.execute("SELECT COUNT(*) FROM providers").fetchone()[0]
        self._value_count = self._db.execute("SELECT COUNT(*) FROM ivalues").fetchone()[0]

    def add_provider(self, key: bytes, provider: PeerId, addrs: tuple[bytes, ...], expires_at: float, now: float) -> bool:
        db = self._db
        exists = db.execute(
            "SELECT 1 FROM providers WHERE key=? AND provider=?", (key, provider.multihash)
        ).fetchone()
        if not exists:
            count = db.execute(
                "SELECT COUNT(*) FROM providers WHERE key=? AND expires_at>?", (key, now)
            ).fetchone()[0]
            if count >= self.limits.max_providers_per_key or self._provider_count >= self.limits.max_provider_records:
                return False
            self._provider_count += 1
        db.execute(
            "INSERT OR REPLACE INTO providers (key, provider, addrs, expires_at) VALUES (?,?,?,?)",
            (key, provider.multihash, _encode_addrs(addrs), expires_at),
        )
        return True

    def get_providers(self, key: bytes, now: float, limit: int) -> list[PeerInfo]:
        rows = self._db.execute(
            "SELECT provider, addrs FROM providers WHERE key=? AND expires_at>? LIMIT ?", (key, now, limit)
        ).fetchall()
        return [PeerInfo(PeerId(bytes(p)), _decode_addrs(a)) for p, a in rows]

    def put_value(self, key: bytes, value: bytes, expires_at: float, now: float) -> bool:
        exists = self._db.execute("SELECT 1 FROM ivalues WHERE key=?", (key,)).fetchone()
        if not exists:
            if self._value_count >= self.limits.max_value_records:
                return False
            self._value_count += 1
        self._db.execute(
            "INSERT OR REPLACE INTO ivalues (key, value, expires_at) VALUES (?,?,?)", (key, value, expires_at)
        )
        return True

    def get_value(self, key: bytes, now: float) -> bytes | None:
        row = self._db.execute("SELECT value FROM ivalues WHERE key=? AND expires_at>?", (key, now)).fetchone()
        return bytes(row[0]) if row else None

    def add_local_provides(self, keys: list[bytes], now: float) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR IGNORE INTO local_provides (key, last_published) VALUES (?, 0)", [(k,) for k in keys]
            )

    def remove_local_provide(self, key: bytes) -> None:
        self._db.execute("DELETE FROM local_provides WHERE key=?", (key,))

    def local_provides(self) -> dict[bytes, float]:
        return {bytes(k): t for k, t in self._db.execute("SELECT key, last_published FROM local_provides")}

    def mark_published(self, keys: list[bytes], now: float) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.executemany(
                "UPDATE local_provides SET last_published=? WHERE key=?", [(now, k) for k in keys]
            )

    def save_peers(self, peers: list[PeerInfo]) -> None:
        with self._db:
            self._db.execute("BEGIN")
            self._db.execute("DELETE FROM known_peers")
            self._db.executemany(
                "INSERT OR REPLACE INTO known_peers (peer, addrs) VALUES (?,?)",
                [(p.peer_id.multihash, _encode_addrs(p.addrs)) for p in peers[: self.limits.max_saved_peers]],
            )

    def load_peers(self) -> list[PeerInfo]:
        peers = []
        for raw, addrs in self._db.execute("SELECT peer, addrs FROM known_peers"):
            try:
                peers.append(PeerInfo(PeerId.from_bytes(bytes(raw)), _decode_addrs(addrs)))
            except IdentityError:
                continue  # a corrupted row costs one bootstrap peer, not the start
        return peers

    def next_sequence(self, name: str, now: float) -> int:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute("SELECT seq FROM sequences WHERE name=?", (name,)).fetchone()
            sequence = _next_sequence(row[0] if row else 0, now)
            self._db.execute("INSERT OR REPLACE INTO sequences (name, seq) VALUES (?,?)", (name, sequence))
        return sequence

    def collect_garbage(self, now: float) -> int:
        with self._db:
            self._db.execute("BEGIN")
            providers = self._db.execute("DELETE FROM providers WHERE expires_at<=?", (now,)).rowcount
            values = self._db.execute("DELETE FROM ivalues WHERE expires_at<=?", (now,)).rowcount
        self._provider_count -= providers
        self._value_count -= values
        return providers + values

    def close(self) -> None:
        self._db.close()
