"""The installed-capsule store: ``<data_dir>/capsules/store/<cid>/``.

A capsule is admitted, copied into the store and admitted again from the
copy (the source could change in between); what fails admission goes to the
quarantine. What runs is always the store's copy.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable
from pathlib import Path

from .admission import Diagnostic, Quarantined, Verified, admit
from .cid import is_cid
from .lifecycle import EventBus, Lifecycle, State
from .quarantine import Quarantine, copy_for_inspection
from .registry import Capsule, CapsuleRegistry
from .storage import ensure_private_dir, fsync_directory
from .trust import TrustPolicy


class CapsuleStore:
    def __init__(self, directory: Path, registry: CapsuleRegistry, quarantine: Quarantine,
                 policy: Callable[[], TrustPolicy], bus: EventBus):
        self.directory = ensure_private_dir(directory)
        self._registry = registry
        self._quarantine = quarantine
        # A callable: the runtime's policy follows its file on disk.
        self._policy = policy
        self._bus = bus

    def install(self, directory: Path) -> Capsule:
        """Admit ``directory``; a verified capsule goes into the store, a rejected one into quarantine."""
        directory = Path(directory)
        in_store = directory.resolve().parent == self.directory.resolve()
        policy = self._policy()
        result = admit(directory, policy)
        if isinstance(result, Verified) and not in_store:
            known = self._registry.lookup(result.cid)
            if known is not None and known.state != State.QUARANTINED:
                return known
            result = self._store_copy(result)
        if isinstance(result, Quarantined):
            return self._quarantine.add(result, move=in_store)
        capsule = Capsule(result.cid, result.directory, Lifecycle(result.cid, result.manifest.name, self._bus), result.manifest,
                          str(result.signer), policy.effective_resources(result.manifest), code=result.code)
        with self._registry.lock:
            known = self._registry.lookup(result.cid)
            if known is not None and known.state != State.QUARANTINED:
                return known
            capsule.lifecycle.transition(State.VERIFIED, f"signed by {result.signer}, trusted for {result.manifest.trust_zone}")
            self._registry.add(capsule, result.cid)
        return capsule

    def install_stored(self) -> list[Capsule]:
        """Re-admit every capsule in the store (after a restart); tampered ones are quarantined."""
        return [self.install(path) for path in sorted(self.directory.iterdir()) if is_cid(path.name)]

    def _store_copy(self, verified: Verified) -> Verified | Quarantined:
        """Copy the capsule's files into the store and admit the copy."""
        target = self.directory / verified.cid
        if not target.exists():
            staging = self.directory / f".{verified.cid}.{secrets.token_hex(6)}.tmp"
            copy_for_inspection(verified.directory, staging)
            staged = admit(staging, self._policy())
            if not isinstance(staged, Verified) or staged.cid != verified.cid:
                shutil.rmtree(staging, ignore_errors=True)
                return staged if isinstance(staged, Quarantined) else Quarantined(
                    verified.directory, (Diagnostic("changed_while_installing", "the capsule changed while it was copied"),))
            try:
                staging.rename(target)
            except OSError:
                # Another thread or process installed the same CID first.
                shutil.rmtree(staging, ignore_errors=True)
            fsync_directory(self.directory)
        return admit(target, self._policy())
