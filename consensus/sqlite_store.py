"""The consensus store on disk: SQLite in WAL mode, synced before a vote leaves.

A write that records a newly signed message (the signer state's last
signed height, round and step moved, or its lock changed at the same
height) runs with ``synchronous=FULL``: the transaction fsyncs the
write-ahead log before it returns, so once :meth:`SqliteConsensusStore.save_state`
returns, the signer state survives ``kill -9`` and power loss; the core
hands out a signed message only after that save, so a restarted validator
never signs anything that conflicts with what it sent (CometBFT's privval
keeps its last-signed state the same way).

Every other write (a decision and the fresh state of the next height, when
this node signed nothing new in that call; decisions a node behind catches
up with) runs with ``synchronous=NORMAL``: in WAL mode it is ordered but not
synced, and the next synced write (at the latest, the next vote this node
signs) makes it durable with everything before it, as the log is one file
written in order. Losing it to a crash loses nothing that was sent: the
node restarts at the undecided height with its signer state (lock, valid
value and what it signed there intact) and is sent the decision again by
its peers. So a validator syncs twice a height (its prevote, its
precommit; a proposer's proposal goes with its prevote), not three times.
"""

from __future__ import annotations

import contextlib
import sqlite3
import struct
from pathlib import Path
from typing import Callable

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
    def __init__(self, data_dir: Path | str, on_saved: Callable[[SavedState], None] | None = None):
        """``on_saved`` hears every signer state once it is written (a bench or test harness notes what was
        signed, and when)."""
        self.path = Path(data_dir) / STORE_FILE_NAME
        self._on_saved = on_saved
        self._db = sqlite3.connect(self.path, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._mode = "FULL"
        self._db.execute("PRAGMA busy_timeout=5000")
        # Transactions that waited for the disk (what a bench counts per height).
        self.synced_writes = 0
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
        # The signer state of the last synced write (what a crash cannot take back): loaded, it is on disk.
        self._synced: SavedState | None = self.load_state()

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
        self._save(None, state)

    def save_commit(self, commit: Commit, state: SavedState | None = None) -> None:
        self._save(commit, state)

    def _save(self, commit: Commit | None, state: SavedState | None) -> None:
        sync = state is not None and self._must_sync(state)
        with self._transaction(sync):  # one transaction: at most one fsync
            if commit is not None:
                self._db.execute("INSERT OR REPLACE INTO commits VALUES (?, ?, ?)",
                                 (commit.certificate.height, encode_certificate(commit.certificate),
                                  pack_value(commit.value)))
            if state is not None:
                self._write_state(state)
        if sync:
            self._synced = state
        if state is not None and self._on_saved is not None:
            self._on_saved(state)

    @property
    def synced_state(self) -> SavedState | None:
        """The signer state of the last synced write: what no crash can take back."""
        return self._synced

    def _must_sync(self, state: SavedState) -> bool:
        """Whether ``state`` covers a message signed since the last synced write (or a lock taken with one)."""
        synced = self._synced
        return (synced is None or state.last_signed != synced.last_signed
                or (state.height == synced.height
                    and (state.locked_round, state.locked_value) != (synced.locked_round, synced.locked_value)))

    @contextlib.contextmanager
    def _transaction(self, sync: bool):
        mode = "FULL" if sync else "NORMAL"
        if mode != self._mode:
            self._db.execute(f"PRAGMA synchronous={mode}")
            self._mode = mode
        with self._db:
            self._db.execute("BEGIN")
            yield
        if sync:
            self.synced_writes += 1

    def _write_state(self, state: SavedState) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO signer_state VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (state.height, state.round, state.locked_round, state.locked_value, state.valid_round,
             state.valid_value, *state.last_signed, _pack(state.own_messages), _pack(state.valid_polka)),
        )

    def load_commit(self, height: int) -> Commit | None:
        row = self._db.execute("SELECT certificate, value FROM commits WHERE height = ?", (height,)).fetchone()
        return None if row is None else Commit(decode_certificate(row[0]), unpack_value(row[1]))

    def last_commit_height(self) -> int:
        (height,) = self._db.execute("SELECT COALESCE(MAX(height), 0) FROM commits").fetchone()
        return height

    def close(self) -> None:
        self._db.close()
