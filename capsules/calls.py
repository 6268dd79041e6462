"""Calls: route a call by name or CID to the serving version and run it.

Input and output of ``json`` entry points are checked against their schemas.
A capsule calling another (``invoke``) is bounded in depth and may call only
a capsule of its own trust zone or a less trusted one, whose capabilities
the caller's zone grants: ``invoke`` never reaches further than the caller could.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable

import jsonschema
import trio

from hypermesh.transport.identity import Identity

from .errors import CallError
from .execution import CallResult
from .host import MAX_INVOKE_DEPTH
from .hotswap import HotSwapper
from .manifest import TRUST_ZONES, Manifest
from .registry import Capsule, CapsuleRegistry
from .sandbox import CallBudget, OverBudget
from .trust import TrustPolicy


# What a call run on the event loop may use before it is handed to a worker
# thread: about a millisecond of guest code (fuel), and a 2 ms deadline.
INLINE_BUDGET = CallBudget(fuel=1_000_000, timeout_ms=2)
# Capabilities whose effects would happen twice if a call were run again.
SIDE_EFFECTS = frozenset({"kv", "invoke"})
# Bulk memory instructions run to their end before a deadline can stop them:
# a memory this small (filled in a few ms) bounds what one attempt can hold
# the event loop for.
INLINE_MAX_MEMORY_BYTES = 16 * 1024 * 1024
# Functions that ran out of the budget's fuel are not tried inline again (the
# most recent ones, by capsule CID and function).
MAX_REMEMBERED_OVER_BUDGET = 1024


class CallRouter:
    def __init__(self, registry: CapsuleRegistry, identity: Identity, swapper: HotSwapper, policy: Callable[[], TrustPolicy]):
        self._registry = registry
        self._identity = identity
        self._swapper = swapper
        self._policy = policy
        self._depth = threading.local()
        # Touched only by budgeted calls, which run on the event loop.
        self._over_budget: dict[tuple[str, str], None] = {}

    def call(self, target: str, function: str, data: bytes, caller: Capsule | None = None,
             budget: CallBudget | None = None) -> CallResult:
        """Run ``function`` of the capsule serving ``target`` (a name or a CID) on ``data``.

        ``caller`` is the capsule calling through ``invoke`` (None for the node
        itself). With a ``budget`` (see :meth:`call_async`), a capsule whose
        calls may not be run twice, or a call that needs more than the
        budget, raises :class:`OverBudget`.
        """
        capsule = self._registry.acquire(target)
        try:
            if caller is not None:
                self._check_invoke(caller, capsule)
            if budget is not None and not self._may_try_inline(capsule, function):
                raise OverBudget("ineligible", f"{capsule.manifest.label}.{function} is not tried inline")
            return self._execute(capsule, function, data, budget)
        except OverBudget as over:
            # A deadline the budget cut says more about the machine than the code: only fuel and held logs count.
            if over.kind in ("fuel", "host"):
                self._remember_over_budget(capsule.cid, function)
            raise
        except CallError as exc:
            fallback = self._swapper.on_failure(capsule, exc)
            if fallback is None:
                raise
        finally:
            self._registry.release(capsule)
        # The new version failed on probation and was rolled back: this call
        # is served by the version it replaced, so the caller sees no failure.
        return self.call(fallback, function, data, caller, budget)

    async def call_async(self, target: str, function: str, data: bytes) -> CallResult:
        """:meth:`call` from trio: a short call runs on the event loop, any other on a worker thread.

        Handing a call to a worker thread and back costs two wake-ups, which
        on a busy machine took longer than the calls themselves (a remote
        run's p50 8.5 ms with the hand-off, 5.1 ms without, at load 8.7). So
        a core-module call whose capsule cannot change anything (no ``kv``,
        no ``invoke``) first runs here within ``INLINE_BUDGET`` (its log
        lines held back); one that needs more is run again in full on a
        worker thread, as every other call is. Only capsules with at most
        ``INLINE_MAX_MEMORY_BYTES`` of memory are tried, and a function that
        once ran out of the budget's fuel is not tried again.
        """
        try:
            result = self.call(target, function, data, budget=INLINE_BUDGET)
        except OverBudget:
            return await trio.to_thread.run_sync(self.call, target, function, data)
        # A full checkpoint, as every trio async call: a caller looping over
        # inline calls must not starve the node's other tasks.
        await trio.lowlevel.checkpoint()
        return result

    def _may_try_inline(self, capsule: Capsule, function: str) -> bool:
        return (retry_safe(capsule.manifest) and capsule.resources.memory_bytes <= INLINE_MAX_MEMORY_BYTES
                and (capsule.cid, function) not in self._over_budget)

    def _remember_over_budget(self, cid: str, function: str) -> None:
        self._over_budget[(cid, function)] = None
        if len(self._over_budget) > MAX_REMEMBERED_OVER_BUDGET:
            del self._over_budget[next(iter(self._over_budget))]

    def invoke(self, caller: Capsule, target: str, function: str, data: bytes) -> bytes:
        """``caller``'s call of another capsule (the host's ``invoke``)."""
        depth = getattr(self._depth, "value", 0)
        if depth >= MAX_INVOKE_DEPTH:
            raise CallError("host", f"capsule call chain deeper than {MAX_INVOKE_DEPTH}")
        self._depth.value = depth + 1
        try:
            return self.call(target, function, data, caller).output
        finally:
            self._depth.value = depth

    def _check_invoke(self, caller: Capsule, callee: Capsule) -> None:
        """Refuse a call up the trust zones, or to a capsule using what the caller's zone does not grant."""
        who, zone, callee_zone = caller.manifest.label, caller.manifest.trust_zone, callee.manifest.trust_zone
        if "invoke" not in caller.manifest.requires:
            raise CallError("denied", f"{who} may not call other capsules: its manifest does not require 'invoke'")
        # TRUST_ZONES runs from the most trusted zone to the least.
        if TRUST_ZONES.index(callee_zone) < TRUST_ZONES.index(zone):
            raise CallError("denied", f"{who} (zone {zone}) may not call {callee.manifest.label} in the more trusted zone {callee_zone}")
        ungranted = sorted(callee.manifest.requires - self._policy().zone_limits[zone].capabilities)
        if ungranted:
            raise CallError("denied", f"{who} (zone {zone}) may not call {callee.manifest.label}, which uses {ungranted}, "
                                      f"not granted to zone {zone}")

    def _execute(self, capsule: Capsule, function: str, data: bytes, budget: CallBudget | None = None) -> CallResult:
        validators = capsule.validators.get(function)
        if validators is not None:
            _validate_json(data, validators[0], f"{capsule.manifest.label}.{function} input", "input")
        started = time.perf_counter_ns()
        outcome = capsule.sandbox.call(function, data, budget)
        duration_us = (time.perf_counter_ns() - started) // 1000
        if validators is not None:
            _validate_json(outcome.output, validators[1], f"{capsule.manifest.label}.{function} output", "output")
        self._swapper.on_success(capsule)
        return CallResult(outcome.output, capsule.cid, function, data, outcome.fuel_used, duration_us, self._identity)


def retry_safe(manifest: Manifest) -> bool:
    """Whether a call of this capsule may be cut short and run again: a core module that cannot change any state."""
    return manifest.kind == "module" and not manifest.requires & SIDE_EFFECTS


def schema_validators(manifest: Manifest) -> dict[str, tuple]:
    """(input, output) validators of each ``json`` entry point, by function name."""
    validators = {}
    for entry in manifest.entry_points.values():
        if entry.io == "json":
            validators[entry.name] = tuple(jsonschema.validators.validator_for(s)(s) for s in (entry.input_schema, entry.output_schema))
    return validators


def _validate_json(data: bytes, validator, what: str, kind: str):
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CallError(kind, f"{what} is not JSON: {exc}") from None
    error = jsonschema.exceptions.best_match(validator.iter_errors(document))
    if error is not None:
        raise CallError(kind, f"{what} does not match its schema: {error.message}")
    return document
