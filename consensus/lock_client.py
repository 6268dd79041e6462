"""Lock client helper (placeholder; filled in below)."""

from __future__ import annotations

from .linearizability import LockResult
from .locks import LockOutcome


def lock_result(outcome: LockOutcome) -> LockResult:
    """An outcome as the linearizability checker's result (the holder is an account key, b"" none)."""
    return LockResult(outcome.ok, outcome.time, outcome.token, outcome.expiry, outcome.holder or None)
