"""Exceptions raised by the capsule runtime.

Every error carries a message meant for an operator: it names the capsule,
file or function concerned and, where it applies, what was expected and what
was found.
"""

from __future__ import annotations


class CapsuleError(Exception):
    """Base class for every capsule-runtime error."""


class FormatError(CapsuleError, ValueError):
    """A capsule directory, manifest, receipt or chunk list is malformed."""


class LifecycleError(CapsuleError):
    """A lifecycle transition is not allowed from the capsule's current state."""


class LinkError(CapsuleError):
    """A capsule's code cannot be linked: an import is not granted, an export is missing."""


class CallError(CapsuleError):
    """A call into a capsule failed.

    ``kind`` says why, so that callers can tell a guest fault from a limit:
    ``fuel`` (ran out of fuel), ``timeout`` (epoch deadline), ``memory``
    (allocation beyond the limit), ``trap`` (any other guest trap), ``abi``
    (the guest broke the calling convention), ``input`` / ``output`` (schema
    validation), ``unavailable`` (no active capsule serves the name),
    ``host`` (a host function failed), ``denied`` (``invoke`` of a capsule
    the caller's trust zone may not reach).
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class ChunkError(CapsuleError, ValueError):
    """A chunk is missing, oversized, or does not match its hash."""


class BuildError(CapsuleError):
    """Building or scaffolding a capsule failed (a compiler is missing or reported an error)."""
