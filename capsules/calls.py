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
from .trust import TrustPolicy


class CallRouter:
    def __init__(self, registry: CapsuleRegistry, identity: Identity, swapper: HotSwapper, policy: Callable[[], TrustPolicy]):
        self._registry = registry
        self._identity = identity
        self._swapper = swapper
        self._policy = policy
        self._depth = threading.local()

    def call(self, target: str, function: str, data: bytes, caller: Capsule | None = None) -> CallResult:
        """Run ``function`` of the capsule serving ``target`` (a name or a CID) on ``data``.

        ``caller`` is the capsule calling through ``invoke`` (None for the node itself).
        """
        capsule = self._registry.acquire(target)
        try:
            if caller is not None:
                self._check_invoke(caller, capsule)
            return self._execute(capsule, function, data)
        except CallError as exc:
            fallback = self._swapper.on_failure(capsule, exc)
            if fallback is None:
                raise
        finally:
            self._registry.release(capsule)
        # The new version failed on probation and was rolled back: this call
        # is served by the version it replaced, so the caller sees no failure.
        return self.call(fallback, function, data, caller)

    async def call_async(self, target: str, function: str, data: bytes) -> CallResult:
        return await trio.to_thread.run_sync(self.call, target, function, data)

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

    def _execute(self, capsule: Capsule, function: str, data: bytes) -> CallResult:
        validators = capsule.validators.get(function)
        if validators is not None:
            _validate_json(data, validators[0], f"{capsule.manifest.label}.{function} input", "input")
        started = time.perf_counter_ns()
        outcome = capsule.sandbox.call(function, data)
        duration_us = (time.perf_counter_ns() - started) // 1000
        if validators is not None:
            _validate_json(outcome.output, validators[1], f"{capsule.manifest.label}.{function} output", "output")
        self._swapper.on_success(capsule)
        return CallResult(outcome.output, capsule.cid, function, data, outcome.fuel_used, duration_us, self._identity)


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
