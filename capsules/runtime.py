"""The capsule runtime: install, admit, load, activate, call, hot-swap, unload.

One :class:`CapsuleRuntime` per node. It owns the wasmtime engine, the
installed-capsule store (``<data_dir>/capsules/store/<cid>/``), the
quarantine (``<data_dir>/capsules/quarantine/``) and the kv database, and
routes calls by capsule name to the version currently serving it.

Threading: calls are synchronous and may run on any thread (``call_async``
runs them on trio worker threads); all bookkeeping happens under one lock
that is never held while guest code runs.
"""

from __future__ import annotations

import json
import logging
import secrets
import shutil
import stat
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import trio

from hypermesh.transport.identity import Identity, init_identity

from .admission import Diagnostic, Quarantined, Verified, admit
from .cid import is_cid
from .engine import CapsuleEngine
from .errors import CallError, CapsuleError, LifecycleError, LinkError
from .execution import CallResult
from .host import MAX_INVOKE_DEPTH, HostServices
from .kvstore import KeyValueStore
from .layout import MANIFEST_FILE, MAX_DEPTH, MAX_FILE_BYTES, MAX_FILES, RECEIPT_FILE, read_bounded
from .lifecycle import Event, EventBus, Lifecycle, State
from .manifest import Manifest, Resources
from .sandbox import build_sandbox
from .storage import atomic_write, ensure_private_dir, fsync_directory
from .trust import POLICY_FILE, TrustPolicy

logger = logging.getLogger("hypermesh.capsules")

# Faults of the capsule itself (as opposed to a caller's bad input): these
# count against a new version on probation and trigger its rollback.
GUEST_FAULTS = frozenset({"fuel", "timeout", "memory", "trap", "abi", "output", "host"})
DEFAULT_PROBATION_CALLS = 20
DEFAULT_PROBATION_S = 2.0
DEFAULT_DRAIN_TIMEOUT_S = 10.0


@dataclass
class Capsule:
    """One capsule version known to the runtime."""

    cid: str
    directory: Path
    lifecycle: Lifecycle
    manifest: Manifest | None = None
    resources: Resources | None = None
    diagnostics: tuple[Diagnostic, ...] = ()
    sandbox: object | None = None
    code: bytes | None = field(default=None, repr=False)
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


@dataclass
class _Probation:
    new: Capsule
    old: Capsule
    target_calls: int
    successes: int = 0
    rolled_back: bool = False
    reason: str = ""
    done: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class SwapReport:
    """What a hot swap did: ``completed`` or ``rolled_back``, and why."""

    outcome: str
    name: str
    old_cid: str | None
    new_cid: str
    reason: str = ""
    drained: bool = True


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
        self.store_dir = ensure_private_dir(root / "store")
        self.quarantine_dir = ensure_private_dir(root / "quarantine")
        self.kv = KeyValueStore(root / "kv.sqlite3")
        self._capsules: dict[str, Capsule] = {}
        self._serving: dict[str, str] = {}
        self._probation: dict[str, _Probation] = {}
        self._lock = threading.RLock()
        self._idle = threading.Condition(self._lock)
        self._depth = threading.local()

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

    # -- installation and admission ------------------------------------

    def install(self, directory: Path) -> Capsule:
        """Admit ``directory``; a verified capsule goes into the store, a rejected one into quarantine.

        What runs is always the store's copy, admitted again after copying:
        the source directory could change between its admission and the copy.
        """
        directory = Path(directory)
        in_store = directory.resolve().parent == self.store_dir.resolve()
        result = admit(directory, self.policy)
        if isinstance(result, Verified) and not in_store:
            with self._lock:
                known = self._capsules.get(result.cid)
                if known is not None and known.state != State.QUARANTINED:
                    return known
            result = self._store_copy(result)
        if isinstance(result, Quarantined):
            return self._quarantine(result, move=in_store)
        capsule = Capsule(result.cid, result.directory, Lifecycle(result.cid, result.manifest.name, self.bus), result.manifest,
                          self.policy.effective_resources(result.manifest), code=result.code)
        with self._lock:
            known = self._capsules.get(result.cid)
            if known is not None and known.state != State.QUARANTINED:
                return known
            capsule.lifecycle.transition(State.VERIFIED, f"signed by {result.signer}, trusted for {result.manifest.trust_zone}")
            self._capsules[result.cid] = capsule
        return capsule

    def _store_copy(self, verified: Verified) -> Verified | Quarantined:
        """Copy the capsule's files into the store and admit the copy."""
        target = self.store_dir / verified.cid
        if not target.exists():
            staging = self.store_dir / f".{verified.cid}.{secrets.token_hex(6)}.tmp"
            _copy_for_inspection(verified.directory, staging)
            staged = admit(staging, self.policy)
            if not isinstance(staged, Verified) or staged.cid != verified.cid:
                shutil.rmtree(staging, ignore_errors=True)
                return staged if isinstance(staged, Quarantined) else Quarantined(
                    verified.directory, (Diagnostic("changed_while_installing", "the capsule changed while it was copied"),))
            try:
                staging.rename(target)
            except OSError:
                # Another thread or process installed the same CID first.
                shutil.rmtree(staging, ignore_errors=True)
            fsync_directory(self.store_dir)
        return admit(target, self.policy)

    def _quarantine(self, result: Quarantined, move: bool = False) -> Capsule:
        """Keep the rejected capsule (a copy, or the store's own directory moved) and its diagnostics."""
        label = result.cid or f"unidentified-{time.time_ns()}"
        name = result.manifest.name if result.manifest else None
        target = self.quarantine_dir / label
        if target.exists():
            skipped = []
            if move:
                shutil.rmtree(result.directory, ignore_errors=True)
        elif move:
            # A stored capsule failed re-admission (tampered at rest): take it out of the store.
            result.directory.rename(target)
            skipped = []
        else:
            skipped = _copy_for_inspection(result.directory, target)
        report = {"cid": result.cid, "source": str(result.directory), "diagnostics": [d.to_document() for d in result.diagnostics],
                  "not_copied": skipped}
        atomic_write(target / "diagnostics.json", json.dumps(report, indent=2).encode())
        capsule = Capsule(label, target, Lifecycle(result.cid, name, self.bus), result.manifest, diagnostics=result.diagnostics)
        with self._lock:
            capsule.lifecycle.transition(State.QUARANTINED, result.reason)
            if result.cid is not None and self._capsules.get(result.cid) is None:
                self._capsules[result.cid] = capsule
        logger.warning("capsule from %s quarantined: %s", result.directory, result.reason)
        return capsule

    def install_stored(self) -> list[Capsule]:
        """Re-admit every capsule in the store (after a restart); tampered ones are quarantined."""
        return [self.install(path) for path in sorted(self.store_dir.iterdir()) if is_cid(path.name)]

    def get(self, cid: str) -> Capsule:
        with self._lock:
            capsule = self._capsules.get(cid)
        if capsule is None:
            raise CapsuleError(f"no capsule {cid} on this node")
        return capsule

    def capsules(self) -> list[Capsule]:
        with self._lock:
            return list(self._capsules.values())

    def serving(self, name: str) -> Capsule | None:
        with self._lock:
            cid = self._serving.get(name)
            return None if cid is None else self._capsules[cid]

    # -- lifecycle ---------------------------------------------------------

    def load(self, cid: str) -> Capsule:
        capsule = self.get(cid)
        with self._lock:
            if capsule.state not in (State.VERIFIED, State.UNLOADED):
                raise LifecycleError(f"capsule {capsule.name} {cid} is {capsule.state.value}; only verified or unloaded capsules load")
        host = HostServices(capsule.manifest.name, f"{capsule.manifest.label} {cid[-8:]}", self.kv,
                            self._invoke, logging.getLogger(f"hypermesh.capsules.{capsule.manifest.name}"))
        code = capsule.code if capsule.code is not None else (capsule.directory / capsule.manifest.impl).read_bytes()
        try:
            sandbox = build_sandbox(self.engine, code, capsule.manifest, capsule.resources, host)
        except LinkError as exc:
            with self._lock:
                capsule.diagnostics = (Diagnostic("link_error", str(exc), capsule.manifest.impl),)
                capsule.lifecycle.transition(State.QUARANTINED, str(exc))
            raise
        validators = {}
        for entry in capsule.manifest.entry_points.values():
            if entry.io == "json":
                validators[entry.name] = tuple(jsonschema.validators.validator_for(s)(s) for s in (entry.input_schema, entry.output_schema))
        with self._lock:
            capsule.sandbox, capsule.validators, capsule.code = sandbox, validators, None
            capsule.lifecycle.transition(State.LOADED, f"{capsule.manifest.kind} linked with {sorted(capsule.manifest.requires)}")
        return capsule

    def activate(self, cid: str) -> Capsule:
        """Make a loaded (or suspended) capsule serve its name; use hot_swap to replace a serving one."""
        capsule = self.get(cid)
        with self._lock:
            if capsule.state in (State.VERIFIED, State.UNLOADED):
                self.load(cid)
            current = self._serving.get(capsule.name)
            if current is not None and current != cid:
                raise LifecycleError(f"{capsule.name} is already served by {current}; use hot_swap to replace it")
            capsule.lifecycle.transition(State.ACTIVE, "activated")
            self._serving[capsule.name] = cid
        return capsule

    def suspend(self, cid: str) -> Capsule:
        capsule = self.get(cid)
        with self._lock:
            capsule.lifecycle.transition(State.SUSPENDED, "suspended")
            if self._serving.get(capsule.name) == cid:
                del self._serving[capsule.name]
        return capsule

    def unload(self, cid: str, reason: str = "unloaded") -> Capsule:
        """Drop the capsule's compiled code; calls already running finish on their own reference."""
        capsule = self.get(cid)
        with self._lock:
            capsule.lifecycle.transition(State.UNLOADED, reason)
            if self._serving.get(capsule.name) == cid:
                del self._serving[capsule.name]
            capsule.sandbox = None
        return capsule

    # -- calls -------------------------------------------------------------

    def _acquire(self, target: str) -> Capsule:
        with self._lock:
            cid = target if target in self._capsules else self._serving.get(target)
            capsule = self._capsules.get(cid) if cid is not None else None
            if capsule is None or capsule.state != State.ACTIVE or capsule.sandbox is None:
                state = "unknown" if capsule is None else capsule.state.value
                raise CallError("unavailable", f"no active capsule serves {target!r} ({state})")
            capsule.inflight += 1
            return capsule

    def _release(self, capsule: Capsule) -> None:
        with self._lock:
            capsule.inflight -= 1
            if capsule.inflight == 0:
                self._idle.notify_all()

    def call(self, target: str, function: str, data: bytes) -> CallResult:
        """Run ``function`` of the capsule serving ``target`` (a name or a CID) on ``data``."""
        capsule = self._acquire(target)
        try:
            return self._execute(capsule, function, data)
        except CallError as exc:
            fallback = self._on_failure(capsule, exc)
            if fallback is None:
                raise
        finally:
            self._release(capsule)
        # The new version failed on probation and was rolled back: this call
        # is served by the version it replaced, so the caller sees no failure.
        return self.call(fallback, function, data)

    async def call_async(self, target: str, function: str, data: bytes) -> CallResult:
        return await trio.to_thread.run_sync(self.call, target, function, data)

    def _execute(self, capsule: Capsule, function: str, data: bytes) -> CallResult:
        validators = capsule.validators.get(function)
        if validators is not None:
            _validate_json(data, validators[0], f"{capsule.manifest.label}.{function} input", "input")
        started = time.perf_counter_ns()
        outcome = capsule.sandbox.call(function, data)
        duration_us = (time.perf_counter_ns() - started) // 1000
        if validators is not None:
            _validate_json(outcome.output, validators[1], f"{capsule.manifest.label}.{function} output", "output")
        self._on_success(capsule)
        return CallResult(outcome.output, capsule.cid, function, data, outcome.fuel_used, duration_us, self.identity)

    def _invoke(self, target: str, function: str, data: bytes) -> bytes:
        depth = getattr(self._depth, "value", 0)
        if depth >= MAX_INVOKE_DEPTH:
            raise CallError("host", f"capsule call chain deeper than {MAX_INVOKE_DEPTH}")
        self._depth.value = depth + 1
        try:
            return self.call(target, function, data).output
        finally:
            self._depth.value = depth

    # -- hot swap ----------------------------------------------------------

    def _on_success(self, capsule: Capsule) -> None:
        probation = self._probation.get(capsule.manifest.name)
        if probation is None or probation.new is not capsule:
            return
        with self._lock:
            probation.successes += 1
            if probation.successes >= probation.target_calls:
                probation.done.set()

    def _on_failure(self, capsule: Capsule, error: CallError) -> str | None:
        """Roll a failing new version back; returns the CID to retry on, if any."""
        if error.kind not in GUEST_FAULTS or capsule.manifest is None:
            return None
        with self._lock:
            if capsule.fallback_cid is None:
                return None
            probation = self._probation.get(capsule.manifest.name)
            if probation is not None and probation.new is capsule and not probation.rolled_back:
                self._roll_back(probation, f"failed on probation: {error}")
            # Calls that were already running on the rolled-back version land here too.
            return capsule.fallback_cid

    def _roll_back(self, probation: _Probation, reason: str) -> None:
        name = probation.new.manifest.name
        probation.new.lifecycle.transition(State.SUSPENDED, f"rolled back: {reason}")
        probation.old.lifecycle.transition(State.ACTIVE, f"restored: {probation.new.cid} {reason}")
        self._serving[name] = probation.old.cid
        probation.rolled_back, probation.reason = True, reason
        probation.done.set()
        self.bus.publish(Event("swap.rolled_back", probation.new.cid, name, {"restored": probation.old.cid, "reason": reason}))

    def _health_check(self, capsule: Capsule) -> str | None:
        """None when the capsule passes its manifest's health check, else why not."""
        check = capsule.manifest.health_check
        if check is None:
            return None
        try:
            outcome = capsule.sandbox.call(check.function, check.input)
        except CallError as exc:
            return f"health check {check.function} failed: {exc}"
        if check.expect_output is not None and outcome.output != check.expect_output:
            return f"health check {check.function} returned {outcome.output[:64]!r}, expected {check.expect_output[:64]!r}"
        return None

    async def hot_swap(self, new_cid: str, *, probation_calls: int = DEFAULT_PROBATION_CALLS,
                       probation_s: float = DEFAULT_PROBATION_S, drain_timeout_s: float = DEFAULT_DRAIN_TIMEOUT_S) -> SwapReport:
        """Replace the version serving the new capsule's name, with zero failed calls.

        1. load the new version and run its health check; on failure it is
           unloaded and the old version never stops serving;
        2. switch the name to the new version atomically (one assignment under
           the lock); the old version is suspended but kept loaded;
        3. probation: until ``probation_calls`` calls succeed (or
           ``probation_s`` passes), a guest fault in the new version rolls
           back at once and the failed call is retried on the old version;
        4. drain the loser's in-flight calls (up to ``drain_timeout_s``) and unload it.
        """
        new = self.get(new_cid)
        name = new.manifest.name if new.manifest else None
        old = self.serving(name) if name else None
        if old is None or old is new:
            await trio.to_thread.run_sync(self.activate, new_cid)
            return SwapReport("completed", name or "", None, new_cid, "nothing was serving")
        if new.state in (State.VERIFIED, State.UNLOADED):
            await trio.to_thread.run_sync(self.load, new_cid)
        problem = await trio.to_thread.run_sync(self._health_check, new)
        if problem is not None:
            self.unload(new_cid, f"rolled back before switching: {problem}")
            self.bus.publish(Event("swap.rolled_back", new_cid, name, {"restored": old.cid, "reason": problem}))
            return SwapReport("rolled_back", name, old.cid, new_cid, problem)
        probation = _Probation(new, old, probation_calls)
        with self._lock:
            if name in self._probation:
                raise LifecycleError(f"a hot swap of {name} is already in progress")
            new.lifecycle.transition(State.ACTIVE, f"hot swap replacing {old.cid}")
            self._serving[name] = new_cid
            old.lifecycle.transition(State.SUSPENDED, f"hot swap to {new_cid}")
            new.fallback_cid = old.cid
            self._probation[name] = probation
        self.bus.publish(Event("swap.switched", new_cid, name, {"previous": old.cid}))
        try:
            await trio.to_thread.run_sync(probation.done.wait, probation_s, abandon_on_cancel=True)
        finally:
            # Also when cancelled: probation ends where it stands, and the
            # suspended version stays loaded for the operator to unload.
            with self._lock:
                del self._probation[name]
                loser = new if probation.rolled_back else old
                if not probation.rolled_back:
                    new.fallback_cid = None
        drained = await trio.to_thread.run_sync(self._wait_idle, loser, drain_timeout_s)
        self.unload(loser.cid, "rolled back" if probation.rolled_back else f"replaced by {new_cid}")
        if probation.rolled_back:
            return SwapReport("rolled_back", name, old.cid, new_cid, probation.reason, drained)
        self.bus.publish(Event("swap.completed", new_cid, name, {"previous": old.cid, "probation_successes": probation.successes}))
        return SwapReport("completed", name, old.cid, new_cid, f"{probation.successes} calls passed probation", drained)

    def _wait_idle(self, capsule: Capsule, timeout: float) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: capsule.inflight == 0, timeout)


def _copy_for_inspection(source: Path, target: Path) -> list[str]:
    """Copy what can safely be copied of a rejected capsule; returns what was left out and why.

    Only regular files within the size limits are copied: a symlink is not
    followed, a FIFO would block the copy, a device must not be read.
    """
    skipped: list[str] = []
    copied = 0
    target.mkdir(parents=True, exist_ok=True)
    for top in (MANIFEST_FILE, RECEIPT_FILE, "spec", "impl"):
        pending = [source / top]
        while pending:
            path = pending.pop()
            relative = path.relative_to(source).as_posix()
            try:
                info = path.lstat()
            except FileNotFoundError:
                continue
            if stat.S_ISDIR(info.st_mode):
                if len(relative.split("/")) <= MAX_DEPTH:
                    pending.extend(path.iterdir())
                continue
            if not stat.S_ISREG(info.st_mode):
                skipped.append(f"{relative}: not a regular file")
            elif info.st_size > MAX_FILE_BYTES or copied >= MAX_FILES:
                skipped.append(f"{relative}: over the size or count limit")
            else:
                atomic_write(target / relative, read_bounded(path, relative, MAX_FILE_BYTES))
                copied += 1
    return skipped


def _validate_json(data: bytes, validator, what: str, kind: str):
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CallError(kind, f"{what} is not JSON: {exc}") from None
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        raise CallError(kind, f"{what} does not match its schema: {error.message}")
    return document
