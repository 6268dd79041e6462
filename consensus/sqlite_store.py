"""The consensus store on disk: SQLite in WAL mode, synced before a vote leaves.

``synchronous=FULL`` makes every transaction fsync the write-ahead log before
it returns, so once :meth:`SqliteConsensusStore.save_state` returns, the
signer state survives ``kill -9`` and power loss; the core hands out a signed
message only after that save, so a restarted validator never signs anything
that conflicts with what it sent (CometBFT's privval keeps its last-signed
state the same way).
"""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

from .store import SavedState
from .wire import Commit, decode_certificate, encode_certificate, pack_value, unpack_value

STORE_FILE_NAME = "consensus.sqlite3"
# SQLite's user_version: 1 = block version 3, values stored packed (wire.pack_value, Brotli from 1 KiB).
STORE_FORMAT = 1


class StoreFormatError(RuntimeError):
    """The store was written in another format (by an older HyperMesh)."""


def _pack(items: tuple[bytes, ...]) -> bytes:
    return b"".join(struct.pack(">I", len(item)) + item for item in items)


def _unpack(blob: bytes) -> tuple[bytes, ...]:
    items, offset = [], 0
    while offset < len(blob):
        (size,) = struct.unpack_from(">I", blob, offset)
        offset += 4
        items.append(blob[offset:offset + size])
        offset += size
    return tuple(items)


class SqliteConsensusStore:
    def __init__(self, data_dir: Path | str):
        self.path = Path(data_dir) / STORE_FILE_NAME
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript("""
            CREATE TABLE IF NOT EXISTS signer_state (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                height INTEGER NOT NULL, round INTEGER NOT NULL,
                locked_round INTEGER NOT NULL, locked_value BLOB,
                valid_round INTEGER NOT NULL, valid_value BLOB,
                last_height INTEGER NOT NULL, last_round INTEGER NOT NULL, last_step INTEGER NOT NULL,
                own_messages BLOB NOT NULL, valid_polka BLOB NOT NULL
            );
            CREATE TABLE IF NOT EXISTS commits (
                height INTEGER PRIMARY KEY, certificate BLOB NOT NULL, value BLOB NOT NULL
            );
        """)
        self._check_format()

    def _check_format(self) -> None:
        (version,) = self._db.execute("PRAGMA user_version").fetchone()
        if version == STORE_FORMAT:
            return
        if version == 0 and self._db.execute("SELECT COUNT(*) FROM commits").fetchone()[0] == 0:
            self._db.execute(f"PRAGMA user_version={STORE_FORMAT}")
            return
        self._db.close()
        raise StoreFormatError(f"{self.path} holds a chain in store format {version}, this node reads format "
                               f"{STORE_FORMAT}: move the chain directory aside and sync again (--state-sync)")

    def load_state(self) -> SavedState | None:
        row = self._db.execute("SELECT height, round, locked_round, locked_value, valid_round, valid_value,"
                               " last_height, last_round, last_step, own_messages, valid_polka"
                               " FROM signer_state WHERE id = 1").fetchone()
        if row is None:
            return None
        (height, round_, locked_round, locked_value, valid_round, valid_value,
         last_height, last_round, last_step, own, polka) = row
        return SavedState(height, round_, locked_round, locked_value, valid_round, valid_value,
                          (last_height, last_round, last_step), _unpack(own), _unpack(polka))

    def save_state(self, state: SavedState) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO signer_state VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (state.height, state.round, state.locked_round, state.locked_value, state.valid_round,
             state.valid_value, *state.last_signed, _pack(state.own_messages), _pack(state.valid_polka)),
        )

    def save_commit(self, commit: Commit, state: SavedState | None = None) -> None:
        with self._db:  # one transaction, one fsync
            self._db.execute("BEGIN")
            self._db.execute("INSERT OR REPLACE INTO commits VALUES (?, ?, ?)",
                             (commit.certificate.height, encode_certificate(commit.certificate),
                              pack_value(commit.value)))
            if state is not None:
                self.save_state(state)

    def load_commit(self, height: int) -> Commit | None:
        row = self._db.execute("SELECT certificate, value FROM commits WHERE height = ?", (height,)).fetchone()
        return None if row is None else Commit(decode_certificate(row[0]), unpack_value(row[1]))

    def last_commit_height(self) -> int:
        (height,) = self._db.execute("SELECT COALESCE(MAX(height), 0) FROM commits").fetchone()
        return height

    def close(self) -> None:
        self._db.close()
