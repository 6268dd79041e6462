"""The capsule runtime: install, admit, load, activate, call, hot-swap, unload.

One :class:`CapsuleRuntime` per node. It composes the installed-capsule store
(``store.py``, ``<data_dir>/capsules/store/<cid>/``), the quarantine
(``quarantine.py``), call routing (``calls.py``) and hot swap
(``hotswap.py``) around one registry of capsules (``registry.py``), and owns
the wasmtime engine and the kv database. The lifecycle steps (load,
activate, suspend, unload) are here.

Threading: calls are synchronous and may run on any thread (``call_async``
runs them on trio worker threads, or short ones of side-effect-free core
modules on the event loop: ``calls.py``); all bookkeeping happens under the
registry's one lock, which is never held while guest code runs.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import trio

from hypermesh.transport.identity import Identity, init_identity

from . import preflight
from .admission import AdmissionResult, Diagnostic
from .calls import CallRouter, schema_validators
from .engine import CapsuleEngine, StoredCode, code_digest
from .errors import LifecycleError, LinkError
from .execution import CallResult
from .host import HostServices
from .hotswap import (DEFAULT_DRAIN_TIMEOUT_S, DEFAULT_PROBATION_CALLS, DEFAULT_PROBATION_S, GUEST_FAULTS, HotSwapper,
                      SwapReport)
from .kvstore import KeyValueStore, kv_namespace
from .lifecycle import EventBus, State
from .quarantine import Quarantine
from .registry import Capsule, CapsuleRegistry
from .sandbox import build_sandbox
from .storage import ensure_private_dir
from .store import CapsuleStore
from .trust import POLICY_FILE, TrustPolicy

__all__ = ["CapsuleRuntime", "Capsule", "SwapReport", "GUEST_FAULTS"]


class CapsuleRuntime:
    def __init__(self, data_dir: Path, identity: Identity | None = None, policy: TrustPolicy | None = None,
                 bus: EventBus | None = None, engine: CapsuleEngine | None = None):
        self.data_dir = Path(data_dir)
        self.identity = identity if identity is not None else init_identity(self.data_dir)[0]
        # Without an explicit policy, follow the policy file, so that
        # `hypermesh capsule trust` takes effect on a running node.
        self._policy_path = self.data_dir / POLICY_FILE if policy is None else None
        self._policy_stamp: tuple | None = None
        self._policy = policy
        self.bus = bus if bus is not None else EventBus()
        self._owns_engine = engine is None
        self.engine = engine if engine is not None else CapsuleEngine(self.data_dir / "artifacts")
        root = ensure_private_dir(self.data_dir / "capsules")
        self.kv = KeyValueStore(root / "kv.sqlite3")
        self._registry = CapsuleRegistry()
        self._quarantine = Quarantine(root / "quarantine", self._registry, self.bus)
        self._store = CapsuleStore(root / "store", self._registry, self._quarantine, lambda: self.policy, self.bus)
        self._swapper = HotSwapper(self._registry, self.bus, self.load, self.activate, self.unload)
        self._calls = CallRouter(self._registry, self.identity, self._swapper, lambda: self.policy)
        self.store_dir = self._store.directory
        self.quarantine_dir = self._quarantine.directory

    @property
    def policy(self) -> TrustPolicy:
        if self._policy_path is not None:
            try:
                info = self._policy_path.stat()
                stamp = (info.st_mtime_ns, info.st_size, info.st_ino)
            except FileNotFoundError:
                stamp = None
            if self._policy is None or stamp != self._policy_stamp:
                policy = TrustPolicy.load(self._policy_path)
                # A node trusts what it signed itself, in every zone.
                policy.trust(self.identity.peer_id)
                self._policy, self._policy_stamp = policy, stamp
        return self._policy

    def close(self) -> None:
        self.kv.close()
        if self._owns_engine:
            self.engine.close()

    # -- installation and admission (store.py, quarantine.py) -------------

    def install(self, directory: Path) -> Capsule:
        """Admit ``directory``; a verified capsule goes into the store, a rejected one into quarantine.

        What runs is always the store's copy, admitted again after copying:
        the source directory could change between its admission and the copy.
        """
        return self._store.install(directory)

    def install_stored(self) -> list[Capsule]:
        """Re-admit every capsule in the store (after a restart); tampered ones are quarantined.

        Capsules quarantined before the restart are known again as quarantined.
        """
        self._quarantine.restore()
        return self._store.install_stored()

    def preflight(self, directory: Path) -> AdmissionResult:
        """Admit, compile and link ``directory`` without installing it (for publishing)."""
        return preflight.verify(Path(directory), self.policy, self.engine)

    def get(self, cid: str) -> Capsule:
        return self._registry.get(cid)

    def capsules(self) -> list[Capsule]:
        return self._registry.all()

    def serving(self, name: str) -> Capsule | None:
        return self._registry.serving(name)

    # -- lifecycle ---------------------------------------------------------

    def load(self, cid: str) -> Capsule:
        """Compile and link a verified (or unloaded) capsule."""
        capsule = self.get(cid)
        with self._registry.lock:
            if capsule.state not in (State.VERIFIED, State.UNLOADED):
                raise LifecycleError(f"capsule {capsule.name} {cid} is {capsule.state.value}; only verified or unloaded capsules load")
        self._load(capsule)
        return capsule

    def _load(self, capsule: Capsule) -> None:
        """Compile and link outside the lock (a component takes seconds, and calls of other capsules go on).

        Threads loading the same capsule at once each compile; the first to
        finish installs its sandbox, the others drop theirs.
        """
        lock = self._registry.lock
        host = HostServices(kv_namespace(capsule.signer, capsule.manifest.name), f"{capsule.manifest.label} {capsule.cid[-8:]}",
                            self.kv, functools.partial(self._calls.invoke, capsule),
                            logging.getLogger(f"hypermesh.capsules.{capsule.manifest.name}"))
        # The admitted bytes at the first load; after that their digest, which
        # finds the compiled artifact without reading the file again.
        path = capsule.directory / capsule.manifest.impl
        if capsule.code is not None:
            code = capsule.code
        elif capsule.code_digest is not None:
            code = StoredCode(capsule.code_digest, path)
        else:
            code = path.read_bytes()
        digest = code_digest(code)
        try:
            sandbox = build_sandbox(self.engine, code, capsule.manifest, capsule.resources, host, digest)
        except LinkError as exc:
            with lock:
                if capsule.state in (State.VERIFIED, State.UNLOADED):
                    self._quarantine.take(capsule, Diagnostic("link_error", str(exc), capsule.manifest.impl))
            raise
        validators = schema_validators(capsule.manifest)
        with lock:
            if capsule.state not in (State.VERIFIED, State.UNLOADED):
                return  # loaded by another thread meanwhile
            capsule.sandbox, capsule.validators, capsule.code, capsule.code_digest = sandbox, validators, None, digest
            capsule.lifecycle.transition(State.LOADED, f"{capsule.manifest.kind} linked with {sorted(capsule.manifest.requires)}")

    def activate(self, cid: str) -> Capsule:
        """Make a loaded (or suspended) capsule serve its name; use hot_swap to replace a serving one.

        Blocks while it compiles: from trio, use :meth:`activate_async`.
        """
        capsule = self.get(cid)
        with self._registry.lock:
            needs_load = capsule.state in (State.VERIFIED, State.UNLOADED)
        if needs_load:
            self._load(capsule)
        with self._registry.lock:
            current = self._registry.serving_cid(capsule.name)
            if current is not None and current != cid:
                raise LifecycleError(f"{capsule.name} is already served by {current}; use hot_swap to replace it")
            capsule.lifecycle.transition(State.ACTIVE, "activated")
            self._registry.serve(capsule.name, cid)
        return capsule

    async def activate_async(self, cid: str) -> Capsule:
        """:meth:`activate` on a worker thread, so that compiling does not block the event loop."""
        return await trio.to_thread.run_sync(self.activate, cid)

    def suspend(self, cid: str) -> Capsule:
        capsule = self.get(cid)
        with self._registry.lock:
            capsule.lifecycle.transition(State.SUSPENDED, "suspended")
            self._registry.stop_serving(capsule.name, cid)
        return capsule

    def unload(self, cid: str, reason: str = "unloaded") -> Capsule:
        """Drop the capsule's compiled code; calls already running finish on their own reference."""
        capsule = self.get(cid)
        with self._registry.lock:
            capsule.lifecycle.transition(State.UNLOADED, reason)
            self._registry.stop_serving(capsule.name, cid)
            capsule.sandbox = None
        return capsule

    # -- calls (calls.py) and hot swap (hotswap.py) ------------------------

    def call(self, target: str, function: str, data: bytes) -> CallResult:
        """Run ``function`` of the capsule serving ``target`` (a name or a CID) on ``data``."""
        return self._calls.call(target, function, data)

    async def call_async(self, target: str, function: str, data: bytes) -> CallResult:
        return await self._calls.call_async(target, function, data)

    async def hot_swap(self, new_cid: str, *, probation_calls: int = DEFAULT_PROBATION_CALLS,
                       probation_s: float = DEFAULT_PROBATION_S, drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S) -> SwapReport:
        """Replace the version serving the new capsule's name with zero failed calls (see ``hotswap.py``)."""
        return await self._swapper.hot_swap(new_cid, probation_calls=probation_calls, probation_s=probation_s,
                                            drain_timeout_s=drain_timeout_s)
