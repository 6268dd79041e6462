"""Trust state on disk: one SQLite file in the node's data directory.

The engine collects what changed (:meth:`TrustEngine.take_changes`); the
driver hands it to :meth:`TrustStore.save`, which writes it in one
transaction (WAL, ``synchronous=FULL``), so a ``kill -9`` loses at most the
changes not yet saved and never leaves half of one. :meth:`load` rebuilds an
engine: evidence, admitted attestations (re-verified: a file edited by hand
cannot plant a review) with their replay counters, and shuns still in force.

Schema (version 1)::

    evidence(peer BLOB, dimension TEXT, good REAL, bad REAL, at REAL, PRIMARY KEY (peer, dimension))
    peers(peer BLOB PRIMARY KEY, first_seen REAL)
    attestations(issuer BLOB, subject BLOB, encoded BLOB, PRIMARY KEY (issuer, subject))
    shuns(peer BLOB PRIMARY KEY, reason TEXT, until REAL)
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from hypermesh.transport.identity import IdentityError, PeerId

from .attestation import AttestationError, decode_attestation
from .engine import Shun, TrustChanges, TrustEngine
from .score import DecayingTally, Dimension, PeerEvidence

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
FILE_NAME = "trust.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS peers (peer BLOB PRIMARY KEY, first_seen REAL NOT NULL);
CREATE TABLE IF NOT EXISTS evidence (
    peer BLOB NOT NULL, dimension TEXT NOT NULL, good REAL NOT NULL, bad REAL NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (peer, dimension));
CREATE TABLE IF NOT EXISTS attestations (
    issuer BLOB NOT NULL, subject BLOB NOT NULL, encoded BLOB NOT NULL, PRIMARY KEY (issuer, subject));
CREATE TABLE IF NOT EXISTS shuns (peer BLOB PRIMARY KEY, reason TEXT NOT NULL, until REAL NOT NULL);
"""


class TrustStoreError(RuntimeError):
    pass


class TrustStore:
    def __init__(self, path: Path):
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise TrustStoreError(f"{path}: trust store schema {version} is newer than this node's {SCHEMA_VERSION}")
            self._db.executescript(_SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise TrustStoreError(f"{path}: cannot open the trust store: {exc}") from None

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> "TrustStore":
        return cls(data_dir / FILE_NAME)

    def close(self) -> None:
        self._db.close()

    def save(self, changes: TrustChanges) -> None:
        if not changes:
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for peer, record in changes.evidence.items():
                key = peer.multihash
                db.execute("INSERT OR IGNORE INTO peers VALUES (?, ?)", (key, record.first_seen))
                for dimension, tally in record.tallies.items():
                    db.execute(
                        "INSERT OR REPLACE INTO evidence VALUES (?, ?, ?, ?, ?)",
                        (key, dimension.value, tally.good, tally.bad, tally.at),
                    )
            for attestation in changes.attestations:
                db.execute(
                    "INSERT OR REPLACE INTO attestations VALUES (?, ?, ?)",
                    (attestation.issuer.multihash, attestation.subject.multihash, attestation.encode()),
                )
            for peer, shun in changes.shuns.items():
                if shun is None:
                    db.execute("DELETE FROM shuns WHERE peer = ?", (peer.multihash,))
                else:
                    db.execute("INSERT OR REPLACE INTO shuns VALUES (?, ?, ?)", (peer.multihash, shun.reason, shun.until))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def load(self, engine: TrustEngine, now: float) -> int:
        """Restore saved state into ``engine``; returns the rows skipped as damaged."""
        skipped = 0
        records: dict[bytes, PeerEvidence] = {}
        for key, first_seen in self._db.execute("SELECT peer, first_seen FROM peers"):
            records[key] = PeerEvidence(first_seen)
        for key, dimension, good, bad, at in self._db.execute("SELECT * FROM evidence"):
            try:
                records.setdefault(key, PeerEvidence(at)).tallies[Dimension(dimension)] = DecayingTally(good, bad, at)
            except ValueError:
                skipped += 1
        for key, record in records.items():
            try:
                engine.restore_evidence(PeerId.from_bytes(key), record)
            except IdentityError:
                skipped += 1
        for (encoded,) in self._db.execute("SELECT encoded FROM attestations"):
            try:
                engine.restore_attestation(decode_attestation(encoded))
            except AttestationError as exc:
                log.warning("trust store: skipping a saved attestation that no longer verifies: %s", exc)
                skipped += 1
        for key, reason, until in self._db.execute("SELECT peer, reason, until FROM shuns"):
            if until > now:
                try:
                    engine.restore_shun(PeerId.from_bytes(key), Shun(reason, until))
                except IdentityError:
                    skipped += 1
        engine.recompute(now)
        return skipped
