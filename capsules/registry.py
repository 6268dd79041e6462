"""The capsules a runtime knows, by CID, and which version serves each name.

All bookkeeping of the runtime happens under this registry's one lock, which
is never held while guest code runs; :meth:`CapsuleRegistry.acquire` and
:meth:`CapsuleRegistry.release` count the calls in flight so that a version
can be drained before it is unloaded.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from .admission import Diagnostic
from .errors import CallError, CapsuleError
from .lifecycle import Lifecycle, State
from .manifest import Manifest, Resources


@dataclass
class Capsule:
    """One capsule version known to the runtime."""

    cid: str
    directory: Path
    lifecycle: Lifecycle
    manifest: Manifest | None = None
    # Peer ID of the key that signed it (None when quarantined).
    signer: str | None = None
    resources: Resources | None = None
    diagnostics: tuple[Diagnostic, ...] = ()
    sandbox: object | None = None
    code: bytes | None = field(default=None, repr=False)
    # sha2-256 (hex) of the admitted code, kept once ``code`` is dropped after the first load.
    code_digest: str | None = field(default=None, repr=False)
    inflight: int = 0
    # While on probation (and after a rollback), where a failed call is retried.
    fallback_cid: str | None = None
    validators: dict = field(default_factory=dict, repr=False)

    @property
    def state(self) -> State:
        return self.lifecycle.state

    @property
    def name(self) -> str | None:
        return None if self.manifest is None else self.manifest.name


class CapsuleRegistry:
    def __init__(self) -> None:
        # Re-entrant: a caller holding it for a multi-step change calls the
        # methods below, which take it again.
        self.lock = threading.RLock()
        self._idle = threading.Condition(self.lock)
        self._capsules: dict[str, Capsule] = {}
        self._serving: dict[str, str] = {}

    def lookup(self, cid: str) -> Capsule | None:
        with self.lock:
            return self._capsules.get(cid)

    def get(self, cid: str) -> Capsule:
        capsule = self.lookup(cid)
        if capsule is None:
            raise CapsuleError(f"no capsule {cid} on this node")
        return capsule

    def add(self, capsule: Capsule, cid: str) -> None:
        with self.lock:
            self._capsules[cid] = capsule

    def all(self) -> list[Capsule]:
        with self.lock:
            return list(self._capsules.values())

    def serving_cid(self, name: str) -> str | None:
        with self.lock:
            return self._serving.get(name)

    def serving(self, name: str) -> Capsule | None:
        with self.lock:
            cid = self._serving.get(name)
            return None if cid is None else self._capsules[cid]

    def serve(self, name: str, cid: str) -> None:
        with self.lock:
            self._serving[name] = cid

    def stop_serving(self, name: str, cid: str) -> None:
        """Stop routing ``name`` to ``cid`` (if it still does)."""
        with self.lock:
            if self._serving.get(name) == cid:
                del self._serving[name]

    def acquire(self, target: str) -> Capsule:
        """The active capsule serving ``target`` (a name or a CID), counted as in flight."""
        with self.lock:
            cid = target if target in self._capsules else self._serving.get(target)
            capsule = self._capsules.get(cid) if cid is not None else None
            if capsule is None or capsule.state != State.ACTIVE or capsule.sandbox is None:
                state = "unknown" if capsule is None else capsule.state.value
                raise CallError("unavailable", f"no active capsule serves {target!r} ({state})")
            capsule.inflight += 1
            return capsule

    def release(self, capsule: Capsule) -> None:
        with self.lock:
            capsule.inflight -= 1
            if capsule.inflight == 0:
                self._idle.notify_all()

    def wait_idle(self, capsule: Capsule, timeout: float) -> bool:
        """Wait until ``capsule`` has no call in flight; False if ``timeout`` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: capsule.inflight == 0, timeout)
