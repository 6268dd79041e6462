"""Hot swap: replace the version serving a name with zero failed calls.

A new version serves on probation; a guest fault during probation rolls it
back at once and the failed call is retried on the version it replaced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from .errors import CallError, LifecycleError
from .lifecycle import Event, EventBus, State
from .registry import Capsule, CapsuleRegistry

# Faults of the capsule itself (as opposed to a caller's bad input): these
# count against a new version on probation and trigger its rollback.
GUEST_FAULTS = frozenset({"fuel", "timeout", "memory", "trap", "abi", "output", "host"})
DEFAULT_PROBATION_CALLS = 20
DEFAULT_PROBATION_S = 2.0
DEFAULT_DRAIN_TIMEOUT_S = 10.0


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


class HotSwapper:
    """Runs hot swaps; the runtime's lifecycle steps (load, activate, unload) are passed in."""

    def __init__(self, registry: CapsuleRegistry, bus: EventBus, load: Callable[[str], Capsule],
                 activate: Callable[[str], Capsule], unload: Callable[[str, str], Capsule]):
        self._registry = registry
        self._bus = bus
        self._load = load
        self._activate = activate
        self._unload = unload
        self._probation: dict[str, _Probation] = {}

    def on_success(self, capsule: Capsule) -> None:
        """Count a successful call towards the probation of a new version."""
        probation = self._probation.get(capsule.manifest.name)
        if probation is None or probation.new is not capsule:
            return
        with self._registry.lock:
            probation.successes += 1
            if probation.successes >= probation.target_calls:
                probation.done.set()

    def on_failure(self, capsule: Capsule, error: CallError) -> str | None:
        """Roll a failing new version back; returns the CID to retry on, if any."""
        if error.kind not in GUEST_FAULTS or capsule.manifest is None:
            return None
        with self._registry.lock:
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
        self._registry.serve(name, probation.old.cid)
        probation.rolled_back, probation.reason = True, reason
        probation.done.set()
        self._bus.publish(Event("swap.rolled_back", probation.new.cid, name, {"restored": probation.old.cid, "reason": reason}))

    @staticmethod
    def _health_check(capsule: Capsule) -> str | None:
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
        new = self._registry.get(new_cid)
        name = new.manifest.name if new.manifest else None
        old = self._registry.serving(name) if name else None
        if old is None or old is new:
            await trio.to_thread.run_sync(self._activate, new_cid)
            return SwapReport("completed", name or "", None, new_cid, "nothing was serving")
        if new.state in (State.VERIFIED, State.UNLOADED):
            await trio.to_thread.run_sync(self._load, new_cid)
        problem = await trio.to_thread.run_sync(self._health_check, new)
        if problem is not None:
            self._unload(new_cid, f"rolled back before switching: {problem}")
            self._bus.publish(Event("swap.rolled_back", new_cid, name, {"restored": old.cid, "reason": problem}))
            return SwapReport("rolled_back", name, old.cid, new_cid, problem)
        probation = _Probation(new, old, probation_calls)
        with self._registry.lock:
            if name in self._probation:
                raise LifecycleError(f"a hot swap of {name} is already in progress")
            new.lifecycle.transition(State.ACTIVE, f"hot swap replacing {old.cid}")
            self._registry.serve(name, new_cid)
            old.lifecycle.transition(State.SUSPENDED, f"hot swap to {new_cid}")
            new.fallback_cid = old.cid
            self._probation[name] = probation
        self._bus.publish(Event("swap.switched", new_cid, name, {"previous": old.cid}))
        try:
            await trio.to_thread.run_sync(probation.done.wait, probation_s, abandon_on_cancel=True)
        finally:
            # Also when cancelled: probation ends where it stands, and the
            # suspended version stays loaded for the operator to unload.
            with self._registry.lock:
                del self._probation[name]
                loser = new if probation.rolled_back else old
                if not probation.rolled_back:
                    new.fallback_cid = None
        drained = await trio.to_thread.run_sync(self._registry.wait_idle, loser, drain_timeout_s)
        self._unload(loser.cid, "rolled back" if probation.rolled_back else f"replaced by {new_cid}")
        if probation.rolled_back:
            return SwapReport("rolled_back", name, old.cid, new_cid, probation.reason, drained)
        self._bus.publish(Event("swap.completed", new_cid, name, {"previous": old.cid, "probation_successes": probation.successes}))
        return SwapReport("completed", name, old.cid, new_cid, f"{probation.successes} calls passed probation", drained)
