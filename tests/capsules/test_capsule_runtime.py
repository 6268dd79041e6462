"""Runtime behaviour: lifecycle, events, host capabilities, JSON entry points, receipts, persistence."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from capsule_testkit import BUILDER, LIMITS_WAT, STRANGER, copy_example, manifest, write_capsule
from hypermesh.capsules.build import build_capsule
from hypermesh.capsules.engine import CapsuleEngine
from hypermesh.capsules.errors import CallError, LifecycleError, LinkError
from hypermesh.capsules.execution import output_matches, verify_execution_receipt
from hypermesh.capsules.lifecycle import ALLOWED, State
from hypermesh.capsules.receipt import sign_capsule
from hypermesh.capsules.runtime import CapsuleRuntime


def example(name: str, tmp_path: Path) -> Path:
    directory = copy_example(name, tmp_path)
    build_capsule(directory)
    sign_capsule(directory, BUILDER)
    return directory


def test_lifecycle_walk_and_events(runtime, tmp_path):
    events = []
    runtime.bus.subscribe(events.append)
    capsule = runtime.install(example("echo", tmp_path))
    runtime.activate(capsule.cid)
    runtime.suspend(capsule.cid)
    with pytest.raises(CallError) as failure:
        runtime.call("examples.echo", "echo", b"x")
    assert failure.value.kind == "unavailable"
    runtime.activate(capsule.cid)
    runtime.unload(capsule.cid)
    runtime.load(capsule.cid)
    steps = [(e.data["from"], e.data["to"]) for e in events if e.topic == "transition"]
    assert steps == [(None, "discovered"), ("discovered", "verified"), ("verified", "loaded"), ("loaded", "active"),
                     ("active", "suspended"), ("suspended", "active"), ("active", "unloaded"), ("unloaded", "loaded")]
    assert [state for state, _ in capsule.lifecycle.history][-1] == State.LOADED


def test_illegal_transitions_are_refused(runtime, tmp_path):
    capsule = runtime.install(example("echo", tmp_path))
    with pytest.raises(LifecycleError, match="cannot go from verified to suspended"):
        runtime.suspend(capsule.cid)
    runtime.activate(capsule.cid)
    with pytest.raises(LifecycleError, match="only verified or unloaded capsules load"):
        runtime.load(capsule.cid)
    assert ALLOWED[State.QUARANTINED] == frozenset()


def test_quarantined_capsule_never_activates_and_stays_on_disk(runtime, tmp_path):
    directory = write_capsule(tmp_path / "bad", manifest(), LIMITS_WAT, signer=STRANGER)
    capsule = runtime.install(directory)
    assert capsule.state == State.QUARANTINED
    with pytest.raises(LifecycleError, match="cannot go from quarantined"):
        runtime.activate(capsule.cid)
    kept = runtime.quarantine_dir / capsule.cid
    report = json.loads((kept / "diagnostics.json").read_text())
    assert report["diagnostics"][0]["code"] == "untrusted_signer"
    assert (kept / "impl" / "code.wasm").exists()


def test_second_version_needs_hot_swap(runtime, tmp_path):
    v1 = runtime.install(write_capsule(tmp_path / "v1", manifest(), LIMITS_WAT))
    v2 = runtime.install(write_capsule(tmp_path / "v2", manifest(version="2.0.0"), LIMITS_WAT))
    runtime.activate(v1.cid)
    with pytest.raises(LifecycleError, match="use hot_swap"):
        runtime.activate(v2.cid)


def test_json_entry_points_validate_input_and_output(runtime, tmp_path):
    capsule = runtime.install(example("counter", tmp_path))
    runtime.activate(capsule.cid)
    assert runtime.call("examples.counter", "increment", b"{}").output == b"1"
    with pytest.raises(CallError) as failure:
        runtime.call("examples.counter", "increment", b'{"unexpected": 1}')
    assert failure.value.kind == "input" and "does not match its schema" in str(failure.value)
    with pytest.raises(CallError) as failure:
        runtime.call("examples.counter", "increment", b"not json")
    assert failure.value.kind == "input"
    assert runtime.call("examples.counter", "increment", b"{}").output == b"2"


def test_log_capability_reaches_the_node_log(runtime, tmp_path, caplog):
    capsule = runtime.install(example("echo", tmp_path))
    runtime.activate(capsule.cid)
    with caplog.at_level("INFO", logger="hypermesh.capsules"):
        assert runtime.call("examples.echo", "reverse", b"abc").output == b"cba"
    assert any("reverse called" in record.getMessage() for record in caplog.records)


INVOKER_WAT = """
(module
  (import "hypermesh" "invoke" (func $invoke (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 0) "examples.echo")
  (data (i32.const 16) "reverse")
  (func (export "hm_alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (global.get $heap))
    (global.set $heap (i32.add (local.get $ptr) (local.get $len)))
    (local.get $ptr))
  ;; forwards its input to examples.echo/reverse and returns that output
  (func (export "forward") (param $ptr i32) (param $len i32) (result i64)
    (local $n i32)
    (local.set $n (call $invoke (i32.const 0) (i32.const 13) (i32.const 16) (i32.const 7)
                                (local.get $ptr) (local.get $len) (i32.const 1024) (i32.const 1024)))
    (if (i32.lt_s (local.get $n) (i32.const 0)) (then unreachable))
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.extend_i32_u (local.get $n))))
)
"""


def test_invoke_capability_calls_another_capsule(runtime, tmp_path):
    echo = runtime.install(example("echo", tmp_path))
    runtime.activate(echo.cid)
    invoker = runtime.install(write_capsule(tmp_path / "inv", manifest(name="tests.invoker", entries=("forward",), requires=["invoke"]), INVOKER_WAT))
    runtime.activate(invoker.cid)
    assert runtime.call("tests.invoker", "forward", b"hello").output == b"olleh"


def test_execution_receipt_verifies_and_detects_tampering(runtime, tmp_path):
    capsule = runtime.install(example("echo", tmp_path))
    runtime.activate(capsule.cid)
    result = runtime.call("examples.echo", "reverse", b"payload")
    receipt = json.loads(json.dumps(result.receipt))  # as a peer would receive it
    assert receipt["capsule"] == capsule.cid and receipt["function"] == "reverse"
    assert receipt["node"] == str(BUILDER.peer_id) and receipt["fuel_used"] > 0
    assert verify_execution_receipt(receipt)
    assert verify_execution_receipt(receipt, BUILDER.public_key_proto)
    assert not verify_execution_receipt(receipt, STRANGER.public_key_proto)
    assert output_matches(receipt, b"daolyap")
    for field, value in (("fuel_used", receipt["fuel_used"] + 1), ("output_hash", "00" * 32), ("function", "echo")):
        assert not verify_execution_receipt({**receipt, field: value})
    assert not verify_execution_receipt({**receipt, "node": str(STRANGER.peer_id)})


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {testdir!r})
from pathlib import Path
from capsule_testkit import BUILDER
from hypermesh.capsules.runtime import CapsuleRuntime
from hypermesh.capsules.trust import TrustPolicy
policy = TrustPolicy(); policy.trust(BUILDER.peer_id)
runtime = CapsuleRuntime(Path({data!r}), identity=BUILDER, policy=policy)
capsule = runtime.install(Path({capsule!r}))
runtime.activate(capsule.cid)
for _ in range(3):
    print(runtime.call("examples.counter", "increment", b"{{}}").output.decode(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_kv_state_survives_kill_9(tmp_path, engine, policy):
    capsule_dir = example("counter", tmp_path)
    data = tmp_path / "node"
    script = KILL_SCRIPT.format(testdir=str(Path(__file__).parent), data=str(data), capsule=str(capsule_dir))
    child = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.split() == ["1", "2", "3"]
    runtime = CapsuleRuntime(data, identity=BUILDER, policy=policy, engine=engine)
    try:
        (capsule,) = runtime.install_stored()
        runtime.activate(capsule.cid)
        assert runtime.call("examples.counter", "increment", b"{}").output == b"4"
    finally:
        runtime.close()


def test_tampered_store_is_quarantined_on_restart(tmp_path, engine, policy):
    runtime = CapsuleRuntime(tmp_path / "node", identity=BUILDER, policy=policy, engine=engine)
    capsule = runtime.install(example("echo", tmp_path))
    runtime.close()
    wasm = capsule.directory / "impl" / "echo.wasm"
    wasm.write_bytes(wasm.read_bytes() + b"\x00")
    restarted = CapsuleRuntime(tmp_path / "node", identity=BUILDER, policy=policy, engine=engine)
    try:
        (again,) = restarted.install_stored()
        assert again.state == State.QUARANTINED
        assert again.diagnostics[0].code == "hash_mismatch" and again.diagnostics[0].path == "impl/echo.wasm"
        # Moved out of the store, so it is not loaded again at the next start.
        assert not capsule.directory.exists() and (again.directory / "diagnostics.json").exists()
        assert restarted.install_stored() == []
    finally:
        restarted.close()


def test_compiled_artifacts_are_cached_on_disk(tmp_path, policy):
    from hypermesh.capsules.engine import CapsuleEngine

    first = CapsuleEngine(tmp_path / "artifacts")
    first.module(bytes(__import__("wasmtime").wat2wasm(LIMITS_WAT)))
    assert first.stats["compiled"] == 1
    first.close()
    second = CapsuleEngine(tmp_path / "artifacts")
    second.module(bytes(__import__("wasmtime").wat2wasm(LIMITS_WAT)))
    assert second.stats == {"compiled": 0, "deserialized": 1, "memory_hits": 0}
    second.close()


def test_quarantine_copy_skips_fifos_and_symlinks(runtime, tmp_path):
    import os

    directory = write_capsule(tmp_path / "odd", manifest(), LIMITS_WAT)
    os.mkfifo(directory / "spec" / "pipe")
    os.symlink("/etc/passwd", directory / "spec" / "link")
    capsule = runtime.install(directory)  # a FIFO must not block the copy
    assert capsule.state == State.QUARANTINED
    report = json.loads((capsule.directory / "diagnostics.json").read_text())
    assert sorted(report["not_copied"]) == ["spec/link: not a regular file", "spec/pipe: not a regular file"]
    assert (capsule.directory / "impl" / "code.wasm").exists()
    assert not (capsule.directory / "spec" / "link").exists()


HOST_WAT = """
(module
  (import "hypermesh" "random_fill" (func $random (param i32 i32)))
  (import "hypermesh" "clock_now_ms" (func $now (result i64)))
  (import "hypermesh" "kv_set" (func $set (param i32 i32 i32 i32) (result i32)))
  (import "hypermesh" "kv_delete" (func $delete (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "k")
  (func (export "hm_alloc") (param i32) (result i32) (i32.const 1024))
  ;; 32 random bytes at 64, then the clock (8 bytes) at 96
  (func (export "entropy") (param i32 i32) (result i64)
    (call $random (i32.const 64) (i32.const 32))
    (i64.store (i32.const 96) (call $now))
    (i64.or (i64.shl (i64.const 64) (i64.const 32)) (i64.const 40)))
  ;; sets k, then deletes it twice: returns the two results as bytes
  (func (export "churn") (param i32 i32) (result i64)
    (drop (call $set (i32.const 0) (i32.const 1) (i32.const 0) (i32.const 1)))
    (i32.store8 (i32.const 200) (call $delete (i32.const 0) (i32.const 1)))
    (i32.store8 (i32.const 201) (call $delete (i32.const 0) (i32.const 1)))
    (i64.or (i64.shl (i64.const 200) (i64.const 32)) (i64.const 2)))
  ;; asks for random bytes far outside its memory
  (func (export "overreach") (param i32 i32) (result i64)
    (call $random (i32.const 65530) (i32.const 100))
    (i64.const 0))
)
"""


def test_random_clock_and_kv_delete_host_functions(runtime, tmp_path):
    import time as clock

    doc = manifest(name="tests.host", entries=("entropy", "churn", "overreach"), requires=["random", "clock", "kv"])
    capsule = runtime.install(write_capsule(tmp_path / "host", doc, HOST_WAT))
    runtime.activate(capsule.cid)
    first = runtime.call("tests.host", "entropy", b"").output
    second = runtime.call("tests.host", "entropy", b"").output
    assert first[:32] != second[:32]
    assert abs(int.from_bytes(first[32:], "little") - clock.time() * 1000) < 60_000
    assert runtime.call("tests.host", "churn", b"").output == b"\x01\x00"
    with pytest.raises(CallError) as failure:
        runtime.call("tests.host", "overreach", b"")
    assert failure.value.kind == "host" and "outside guest memory" in str(failure.value)
    assert runtime.call("tests.host", "churn", b"").output == b"\x01\x00"


async def test_events_reach_trio_tasks_from_worker_threads(runtime, tmp_path):
    import trio

    receive, unsubscribe = runtime.bus.open_trio_channel()
    capsule = runtime.install(example("echo", tmp_path))
    await trio.to_thread.run_sync(runtime.activate, capsule.cid)  # transitions published off the trio thread
    seen = []
    with trio.fail_after(10):
        while len(seen) < 4:
            seen.append((await receive.receive()).data["to"])
    assert seen == ["discovered", "verified", "loaded", "active"]
    unsubscribe()
    runtime.suspend(capsule.cid)
    assert runtime.bus.dropped == 0


def test_trusting_a_signer_takes_effect_without_a_restart(tmp_path):
    from hypermesh.capsules.trust import POLICY_FILE, TrustPolicy

    runtime = CapsuleRuntime(tmp_path / "node")
    try:
        first = runtime.install(write_capsule(tmp_path / "a", manifest(), LIMITS_WAT, signer=STRANGER))
        assert first.state is State.QUARANTINED
        # What `hypermesh capsule trust` does, from another process.
        policy = TrustPolicy.load(tmp_path / "node" / POLICY_FILE)
        policy.trust(STRANGER.peer_id)
        policy.save(tmp_path / "node" / POLICY_FILE)
        second = runtime.install(write_capsule(tmp_path / "b", manifest(version="1.0.1"), LIMITS_WAT, signer=STRANGER))
        assert second.state is State.VERIFIED
        assert runtime.policy.allows(runtime.identity.peer_id, "system")  # still trusts itself
    finally:
        runtime.close()


def _tamper_installed_code(capsule) -> None:
    path = capsule.directory / capsule.manifest.impl
    path.chmod(0o600)
    path.write_bytes(b"\0asm\1\0\0\0")  # a valid, empty module: other code than was admitted


def test_reload_finds_the_compiled_code_by_the_admitted_digest(runtime, tmp_path):
    # A cold start after unload reads neither the code file nor compiles: the
    # artifact is found by the digest of the bytes admitted. What runs is the
    # admitted code, whatever the file on disk became.
    capsule = runtime.install(example("echo", tmp_path))
    runtime.activate(capsule.cid)
    runtime.unload(capsule.cid)
    runtime.engine.forget_loaded()
    _tamper_installed_code(capsule)
    compiled = runtime.engine.stats["compiled"]
    runtime.activate(capsule.cid)
    assert runtime.call("examples.echo", "reverse", b"abc").output == b"cba"
    assert runtime.engine.stats["compiled"] == compiled


def test_recompiling_refuses_code_other_than_was_admitted(tmp_path, policy):
    # Without a compiled artifact the file is read again, and checked against the admitted digest.
    runtime = CapsuleRuntime(tmp_path / "node", identity=BUILDER, policy=policy,
                             engine=CapsuleEngine(None))  # compiled code in memory only
    try:
        capsule = runtime.install(example("echo", tmp_path))
        runtime.activate(capsule.cid)
        runtime.unload(capsule.cid)
        runtime.engine.forget_loaded()
        _tamper_installed_code(capsule)
        with pytest.raises(LinkError, match="is not the code that was admitted"):
            runtime.activate(capsule.cid)
        assert capsule.state == State.QUARANTINED
    finally:
        runtime.close()
