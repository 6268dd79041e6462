"""Running capsules on a node's runtime: make a capsule ready, call it, swap and roll back versions.

The one path every execution takes, whoever asked for it: the node's own
user through the control socket, a short-lived runtime of the CLI when no
node runs, and peers over ``/hm/capsule-run/1.0.0``. Admission and
compilation run on worker threads, so the event loop keeps serving.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import trio

from .errors import CapsuleError, LifecycleError
from .execution import CallResult
from .hotswap import SwapReport
from .layout import read_bounded
from .lifecycle import State
from .registry import Capsule
from .reports import resolve_target

MAX_CALL_INPUT_BYTES = 64 * 1024 * 1024


def call_input(text: bytes, input_file: str | None, hex_input: bool) -> bytes:
    """A call's input: ``text``, or the file's bytes (≤ 64 MiB), hex-decoded when ``hex_input``."""
    data = text if input_file is None else read_bounded(Path(input_file), input_file, MAX_CALL_INPUT_BYTES)
    if hex_input:
        try:
            return bytes.fromhex(data.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise CapsuleError("--hex input is not hexadecimal") from None
    return data


class CapsuleQuarantined(CapsuleError):
    """The capsule failed admission (or linking); ``diagnostics`` say why."""

    def __init__(self, capsule: Capsule):
        self.capsule = capsule
        self.diagnostics = tuple(capsule.diagnostics)
        reasons = "; ".join(str(d) for d in self.diagnostics) or "no diagnostic"
        super().__init__(f"capsule {capsule.cid} is quarantined: {reasons}")


class CapsuleExecutor:
    """Prepares and calls capsules of one runtime; remembers the version each hot swap replaced.

    ``runtime`` is a :class:`~hypermesh.capsules.runtime.CapsuleRuntime`.
    """

    def __init__(self, runtime):
        self.runtime = runtime
        # One preparation per CID at a time: two first calls must not both activate it.
        self._preparing: defaultdict[str, trio.Lock] = defaultdict(trio.Lock)
        self._replaced: dict[str, str] = {}

    def known(self, cid: str) -> Capsule | None:
        """The capsule ``cid`` if the runtime has it installed (quarantined or not)."""
        try:
            return self.runtime.get(cid)
        except CapsuleError:
            return None

    async def install(self, target: str | Path) -> Capsule:
        """Admit a capsule directory, or find an installed CID; raises :class:`CapsuleQuarantined`."""
        target = str(target)
        capsule = self.known(target)
        if capsule is None:
            directory = resolve_target(self.runtime.store_dir, target)
            capsule = await trio.to_thread.run_sync(self.runtime.install, directory)
        if capsule.state == State.QUARANTINED:
            raise CapsuleQuarantined(capsule)
        return capsule

    async def ready(self, capsule: Capsule) -> Capsule:
        """Activate an installed capsule unless it already serves; compiles off the event loop."""
        if capsule.state == State.ACTIVE:
            return capsule  # what the check under the lock would find, without waiting for it
        async with self._preparing[capsule.cid]:
            if capsule.state == State.ACTIVE:
                return capsule
            serving = self.runtime.serving(capsule.name)
            if serving is not None and serving is not capsule:
                raise LifecycleError(f"{capsule.name} is served by {serving.cid}: "
                                     f"`hypermesh capsule swap {capsule.name} {capsule.cid}` replaces it")
            await trio.to_thread.run_sync(self.runtime.activate, capsule.cid)
            if capsule.state == State.QUARANTINED:
                raise CapsuleQuarantined(capsule)
        return capsule

    async def run(self, target: str | Path, function: str, data: bytes) -> CallResult:
        """Install (if a directory), activate (if needed) and call ``function`` of ``target`` on ``data``."""
        capsule = await self.ready(await self.install(target))
        return await self.runtime.call_async(capsule.cid, function, data)

    async def swap(self, name: str, cid: str) -> SwapReport:
        """Hot-swap the version serving ``name`` for the installed capsule ``cid``."""
        capsule = await self.install(cid)
        if capsule.name != name:
            raise CapsuleError(f"capsule {cid} is {capsule.name}, not {name}")
        serving = self.runtime.serving(name)
        if serving is capsule:
            raise CapsuleError(f"{name} is already served by {cid}")
        report = await self.runtime.hot_swap(cid)
        if report.outcome == "completed" and serving is not None and serving.cid != cid:
            self._replaced[name] = serving.cid
        return report

    async def roll_back(self, name: str) -> SwapReport:
        """Hot-swap ``name`` back to the version its last completed swap replaced."""
        previous = self._replaced.get(name)
        if previous is None:
            raise CapsuleError(f"no earlier version of {name} to roll back to: it was not swapped on this node since it started")
        return await self.swap(name, previous)
