"""What a validator must remember across a crash, and an in-memory store of it.

The core saves its :class:`SavedState` before any message it signed leaves
it (the driver sends only what ``take_outbound`` returns after the save), so
a restarted validator knows the last height, round and step it signed and
its lock: it signs nothing that conflicts with what it sent before the
crash. Decisions (value and commit certificate) are kept to serve nodes that
are behind.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .wire import Commit


@dataclass(frozen=True, slots=True)
class SavedState:
    height: int
    round: int
    locked_round: int
    locked_value: bytes | None
    valid_round: int
    valid_value: bytes | None
    # (height, round, step) of the latest message signed; step: 0 proposal, 1 prevote, 2 precommit
    last_signed: tuple[int, int, int]
    # The canonical encodings of every message signed at this height.
    own_messages: tuple[bytes, ...]
    # The prevotes (encoded) of the polka that made valid_value valid: a
    # restarted proposer must still be able to show it.
    valid_polka: tuple[bytes, ...] = ()


class ConsensusStore(Protocol):
    def load_state(self) -> SavedState | None: ...

    def save_state(self, state: SavedState) -> None:
        """Durable when it returns."""

    def save_commit(self, commit: Commit, state: SavedState | None = None) -> None:
        """A decision (and the state that follows it, if given), atomically; durable when it returns."""

    def load_commit(self, height: int) -> Commit | None: ...

    def last_commit_height(self) -> int: ...


class MemoryConsensusStore:
    """Survives a simulated crash (the simulator keeps it; the core is rebuilt)."""

    def __init__(self):
        self.state: SavedState | None = None
        self.commits: dict[int, Commit] = {}

    def load_state(self) -> SavedState | None:
        return self.state

    def save_state(self, state: SavedState) -> None:
        self.state = state

    def save_commit(self, commit: Commit, state: SavedState | None = None) -> None:
        self.commits[commit.certificate.height] = commit
        if state is not None:
            self.state = state

    def load_commit(self, height: int) -> Commit | None:
        return self.commits.get(height)

    def last_commit_height(self) -> int:
        return max(self.commits, default=0)
