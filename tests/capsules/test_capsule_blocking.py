"""Slow work stays away from the runtime lock and the event loop: compiling, and unpacking fetched chunks."""

from __future__ import annotations

import threading

import pytest
import trio

from capsule_testkit import BUILDER, LIMITS_WAT, manifest, write_capsule
from hypermesh.capsules.chunks import ChunkStore, unpack
from hypermesh.capsules.engine import CapsuleEngine
from hypermesh.capsules.errors import LifecycleError
from hypermesh.capsules.lifecycle import State
from hypermesh.capsules.runtime import CapsuleRuntime

# Generous: each bound only turns a hang into a failure.
WAIT_S = 30


class GatedEngine(CapsuleEngine):
    """Compiling a module marked ``gated`` waits until the test opens the gate."""

    def __init__(self, gated: bytes):
        super().__init__(None)
        self.gated = gated
        self.compiling = threading.Event()
        self.gate = threading.Event()

    def module(self, code, digest=None):
        if code == self.gated:
            self.compiling.set()
            assert self.gate.wait(WAIT_S), "the test never opened the gate"
        return super().module(code, digest)


def test_activate_compiles_outside_the_runtime_lock(tmp_path, policy):
    slow_code = LIMITS_WAT.replace("(i64.const 0))", "(i64.const 1))")
    slow_dir = write_capsule(tmp_path / "slow", manifest("tests.slow"), slow_code)
    engine = GatedEngine(bytes((slow_dir / "impl" / "code.wasm").read_bytes()))
    runtime = CapsuleRuntime(tmp_path / "node", identity=BUILDER, policy=policy, engine=engine)
    try:
        fast = runtime.install(write_capsule(tmp_path / "fast", manifest("tests.fast"), LIMITS_WAT))
        runtime.activate(fast.cid)
        slow = runtime.install(slow_dir)
        activating = threading.Thread(target=runtime.activate, args=(slow.cid,))
        activating.start()
        try:
            assert engine.compiling.wait(WAIT_S)
            # While the slow capsule compiles, the runtime serves calls and answers questions.
            answered = threading.Event()

            def use_runtime():
                runtime.call("tests.fast", "echo", b"meanwhile")
                runtime.capsules()
                answered.set()

            threading.Thread(target=use_runtime, daemon=True).start()
            assert answered.wait(WAIT_S), "a call waited for another capsule's compile"
        finally:
            engine.gate.set()
            activating.join(WAIT_S)
        assert slow.state == State.ACTIVE
        assert runtime.call("tests.slow", "echo", b"after").output == b"after"
    finally:
        runtime.close()
        engine.close()


def test_concurrent_activations_load_once(tmp_path, runtime):
    capsule = runtime.install(write_capsule(tmp_path / "c", manifest(), LIMITS_WAT))
    outcomes = []

    def activate():
        try:
            runtime.activate(capsule.cid)
            outcomes.append("activated")
        except LifecycleError as exc:
            outcomes.append(str(exc))

    threads = [threading.Thread(target=activate) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S)
    # One activation wins; the others find it active already.
    assert sorted(outcomes) == ["activated"] + ["capsule tests.limits: cannot go from active to active"] * 3
    assert capsule.state == State.ACTIVE
    assert [state for state, _ in capsule.lifecycle.history].count(State.LOADED) == 1


class ThreadRecordingStore(ChunkStore):
    """Records the thread of every chunk write and read."""

    def __init__(self, root):
        super().__init__(root)
        self.threads: set[int] = set()

    def put(self, data: bytes) -> str:
        self.threads.add(threading.get_ident())
        return super().put(data)

    def get(self, digest: str) -> bytes:
        self.threads.add(threading.get_ident())
        return super().get(digest)


async def test_unpacking_writes_off_the_event_loop(tmp_path):
    source = write_capsule(tmp_path / "src", manifest(), LIMITS_WAT, spec={"spec/data.bin": bytes(range(256)) * 2000})
    sender = ChunkStore(tmp_path / "sender")
    _, chunk_list = sender.pack(source)
    receiver = ThreadRecordingStore(tmp_path / "receiver")
    await unpack(chunk_list, sender.fetch, tmp_path / "out", receiver, parallel=4)
    assert receiver.threads and threading.get_ident() not in receiver.threads
    assert (tmp_path / "out" / "spec" / "data.bin").read_bytes() == bytes(range(256)) * 2000


async def test_activate_async_runs_off_the_event_loop(tmp_path, runtime):
    capsule = runtime.install(write_capsule(tmp_path / "c", manifest(), LIMITS_WAT))
    with trio.fail_after(WAIT_S):
        await runtime.activate_async(capsule.cid)
    assert (await runtime.call_async("tests.limits", "echo", b"x")).output == b"x"
