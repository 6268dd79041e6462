"""The per-capsule key-value store behind the ``kv`` capability.

One SQLite database per node, in WAL mode with ``synchronous=FULL``: a
committed ``set`` survives ``kill -9`` and power loss. Keys are namespaced by
signer and capsule name (:func:`kv_namespace`): a later version signed by the
same key (a hot swap) sees its predecessor's data, a same-named capsule of
another signer does not.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from .errors import CallError

MAX_KEY_BYTES = 256
MAX_VALUE_BYTES = 64 * 1024
MAX_KEYS_PER_CAPSULE = 100_000


def kv_namespace(signer: str, name: str) -> str:
    """The namespace of a capsule's data: ``<signer peer ID>/<capsule name>``."""
    return f"{signer}/{name}"


class KeyValueStore:
    def __init__(self, path: Path):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # One connection shared by the call threads, serialised by a lock:
        # calls into capsules are short and SQLite serialises writers anyway.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS kv (capsule TEXT NOT NULL, key BLOB NOT NULL, value BLOB NOT NULL,"
                " PRIMARY KEY (capsule, key)) WITHOUT ROWID"
            )

    @staticmethod
    def _check_key(key: bytes) -> None:
        if len(key) > MAX_KEY_BYTES:
            raise CallError("host", f"kv key of {len(key)} bytes is over the {MAX_KEY_BYTES}-byte limit")

    def get(self, capsule: str, key: bytes) -> bytes | None:
        self._check_key(key)
        with self._lock:
            row = self._db.execute("SELECT value FROM kv WHERE capsule=? AND key=?", (capsule, key)).fetchone()
        return None if row is None else bytes(row[0])

    def set(self, capsule: str, key: bytes, value: bytes) -> None:
        self._check_key(key)
        if len(value) > MAX_VALUE_BYTES:
            raise CallError("host", f"kv value of {len(value)} bytes is over the {MAX_VALUE_BYTES}-byte limit")
        with self._lock:
            exists = self._db.execute("SELECT 1 FROM kv WHERE capsule=? AND key=?", (capsule, key)).fetchone()
            if exists is None:
                (count,) = self._db.execute("SELECT COUNT(*) FROM kv WHERE capsule=?", (capsule,)).fetchone()
                if count >= MAX_KEYS_PER_CAPSULE:
                    raise CallError("host", f"capsule {capsule} already holds {count} keys, the limit")
            self._db.execute("INSERT OR REPLACE INTO kv (capsule, key, value) VALUES (?, ?, ?)", (capsule, key, value))

    def delete(self, capsule: str, key: bytes) -> bool:
        self._check_key(key)
        with self._lock:
            cursor = self._db.execute("DELETE FROM kv WHERE capsule=? AND key=?", (capsule, key))
        return cursor.rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()
