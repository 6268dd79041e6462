"""Sandbox limits: fuel, epoch deadline, memory ceiling, link-time refusal of imports."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from capsule_testkit import DEADLINE_SLACK_MS, LIMITS_WAT, manifest, write_capsule
from hypermesh.capsules.errors import CallError, LinkError
from hypermesh.capsules.lifecycle import State


def activate(runtime, tmp_path, doc, code=LIMITS_WAT):
    capsule = runtime.install(write_capsule(tmp_path / doc["name"], doc, code))
    assert capsule.state == State.VERIFIED, capsule.diagnostics
    runtime.activate(capsule.cid)
    return capsule


def assert_runtime_healthy(runtime, name):
    assert runtime.call(name, "echo", b"still alive").output == b"still alive"


def test_endless_loop_is_stopped_by_fuel(runtime, tmp_path):
    activate(runtime, tmp_path, manifest(fuel=5_000_000, timeout_ms=10_000))
    with pytest.raises(CallError) as failure:
        runtime.call("tests.limits", "spin", b"")
    assert failure.value.kind == "fuel"
    assert "ran out of fuel (5000000 units)" in str(failure.value)
    assert_runtime_healthy(runtime, "tests.limits")


@pytest.mark.parametrize("timeout_ms", [20, 100])
def test_endless_loop_is_stopped_by_epoch_after_its_timeout_every_time(runtime, tmp_path, timeout_ms):
    activate(runtime, tmp_path, manifest(fuel=100_000_000_000, timeout_ms=timeout_ms))
    elapsed = []
    for _ in range(5):
        started = time.perf_counter()
        with pytest.raises(CallError) as failure:
            runtime.call("tests.limits", "spin", b"")
        elapsed.append((time.perf_counter() - started) * 1000)
        assert failure.value.kind == "timeout"
        assert f"exceeded its {timeout_ms} ms deadline" in str(failure.value)
    # Every run: never cut short, never later than scheduling on a loaded machine explains.
    assert all(timeout_ms <= ms <= timeout_ms + DEADLINE_SLACK_MS for ms in elapsed), elapsed
    assert_runtime_healthy(runtime, "tests.limits")


def test_early_epoch_increments_never_cut_a_call_short(runtime, tmp_path):
    # An increment may land early (libc may run a timer expiry just after the
    # timer is disarmed, in the next call): the deadline is the clock's.
    timeout_ms = 50
    activate(runtime, tmp_path, manifest(fuel=100_000_000_000, timeout_ms=timeout_ms))
    spinning = threading.Event()
    done = threading.Event()

    def increment_far_ahead():
        spinning.wait(5)
        for _ in range(10_000):
            runtime.engine.engine.increment_epoch()
        done.set()

    threading.Thread(target=increment_far_ahead, daemon=True).start()
    started = time.perf_counter()
    spinning.set()
    with pytest.raises(CallError) as failure:
        runtime.call("tests.limits", "spin", b"")
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert done.wait(5)
    assert failure.value.kind == "timeout"
    assert timeout_ms <= elapsed_ms <= timeout_ms + DEADLINE_SLACK_MS, elapsed_ms


def test_a_deadline_is_enforced_after_a_timer_kept_for_an_earlier_call_expired(runtime, tmp_path):
    # A call that ends early leaves the timer set for its deadline (KEEP_TIMER_NS): the
    # next call, coming after that expired for nothing, must set it again. Without a
    # deadline the loop would run out of its fuel instead, after seconds.
    timeout_ms = 100
    activate(runtime, tmp_path, manifest(fuel=3_000_000_000, timeout_ms=timeout_ms))
    assert runtime.call("tests.limits", "echo", b"x").output == b"x"
    time.sleep(2 * timeout_ms / 1000)  # past the first call's deadline
    started = time.perf_counter()
    with pytest.raises(CallError) as failure:
        runtime.call("tests.limits", "spin", b"")
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert failure.value.kind == "timeout"
    assert timeout_ms <= elapsed_ms <= timeout_ms + DEADLINE_SLACK_MS, elapsed_ms


FALLBACK_TICKER_SCRIPT = """
import time, wasmtime
from hypermesh.capsules import epoch
ticks = epoch.shared()
assert not ticks.native
store = wasmtime.Store(ticks.engine)
store.set_fuel(10 ** 15)
spin = wasmtime.Instance(store, wasmtime.Module(ticks.engine, '(module (func (export "f") (loop br 0)))'), [])
started = time.perf_counter()
deadline = ticks.set_deadline(store, 30)
ticks.enter(deadline)
try:
    spin.exports(store)["f"](store)
except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
    assert "interrupt" in str(exc), exc
    print(round((time.perf_counter() - started) * 1000, 1))
finally:
    ticks.leave(deadline)
"""


def test_the_fallback_ticker_thread_stops_a_loop_after_its_timeout():
    # Where there is no POSIX timer (forced here), a Python thread advances the epoch.
    result = subprocess.run([sys.executable, "-c", FALLBACK_TICKER_SCRIPT], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "HYPERMESH_EPOCH_THREAD": "1"})
    assert result.returncode == 0, result.stderr
    assert 30 <= float(result.stdout) <= 30 + DEADLINE_SLACK_MS, result.stdout


def test_memory_grow_past_the_limit_returns_minus_one(runtime, tmp_path):
    limit_pages = 4
    activate(runtime, tmp_path, manifest(memory=limit_pages * 65536))
    # The guest grows until memory.grow returns -1 and reports the pages it holds.
    assert runtime.call("tests.limits", "hog", b"").output == b"04,-1"
    assert_runtime_healthy(runtime, "tests.limits")


def test_module_whose_initial_memory_exceeds_the_limit_cannot_run(runtime, tmp_path):
    code = LIMITS_WAT.replace('(memory (export "memory") 1)', '(memory (export "memory") 32)')
    activate(runtime, tmp_path, manifest(memory=4 * 65536), code)
    with pytest.raises(CallError) as failure:
        runtime.call("tests.limits", "echo", b"x")
    assert failure.value.kind in {"memory", "trap"}
    assert "memory" in str(failure.value)


def test_trust_zone_tightens_the_manifest(runtime, tmp_path):
    capsule = activate(runtime, tmp_path, manifest(zone="ephemeral", fuel=100_000_000_000, timeout_ms=600_000, memory=1 << 30))
    zone = runtime.policy.zone_limits["ephemeral"]
    assert capsule.resources.fuel == zone.fuel
    assert capsule.resources.timeout_ms == zone.timeout_ms
    assert capsule.resources.memory_bytes == zone.memory_bytes


def test_undeclared_host_import_is_refused_at_link(runtime, tmp_path):
    code = LIMITS_WAT.replace("(module", '(module (import "hypermesh" "kv_get" (func (param i32 i32 i32 i32) (result i32)))', 1)
    capsule = runtime.install(write_capsule(tmp_path / "c", manifest(requires=["log"]), code))
    with pytest.raises(LinkError) as failure:
        runtime.activate(capsule.cid)
    assert "imports hypermesh.kv_get, which needs capability 'kv' that its manifest does not require" in str(failure.value)
    assert capsule.state == State.QUARANTINED
    assert capsule.diagnostics[0].code == "link_error"


@pytest.mark.parametrize("module, name, expected", [
    ("wasi_snapshot_preview1", "fd_write", "may import only host functions from 'hypermesh'"),
    ("hypermesh", "open_socket", "which is not a host function"),
])
def test_foreign_imports_are_refused_at_link(runtime, tmp_path, module, name, expected):
    code = LIMITS_WAT.replace("(module", f'(module (import "{module}" "{name}" (func (param i32 i32))) ', 1)
    capsule = runtime.install(write_capsule(tmp_path / "c", manifest(), code))
    with pytest.raises(LinkError, match=expected):
        runtime.activate(capsule.cid)
    # Other capsules are unaffected.
    activate(runtime, tmp_path, manifest(name="tests.other"))
    assert_runtime_healthy(runtime, "tests.other")


def test_trap_is_reported_and_the_next_call_works(runtime, tmp_path):
    activate(runtime, tmp_path, manifest())
    with pytest.raises(CallError) as failure:
        runtime.call("tests.limits", "boom", b"")
    assert failure.value.kind == "trap" and "unreachable" in str(failure.value)
    assert_runtime_healthy(runtime, "tests.limits")


def test_missing_export_is_a_link_error(runtime, tmp_path):
    capsule = runtime.install(write_capsule(tmp_path / "c", manifest(entries=("echo", "absent")), LIMITS_WAT))
    with pytest.raises(LinkError, match="does not export function 'absent'"):
        runtime.activate(capsule.cid)


def test_output_range_outside_memory_is_an_abi_error(runtime, tmp_path):
    # `health` returns at once: the host reaches its range check.
    health = '(func (export "health") (param i32 i32) (result i64)\n    (i64.const 0))'
    assert health in LIMITS_WAT
    code = LIMITS_WAT.replace(health, '(func (export "health") (param i32 i32) (result i64)\n    (i64.const 0xFFFF000000000010))')
    activate(runtime, tmp_path, manifest(), code)
    with pytest.raises(CallError) as failure:
        runtime.call("tests.limits", "health", b"")
    assert failure.value.kind == "abi"
    assert f"returned range {0xFFFF0000}+16, outside its memory" in str(failure.value)
    assert_runtime_healthy(runtime, "tests.limits")


def test_input_buffer_outside_memory_is_an_abi_error(runtime, tmp_path):
    code = LIMITS_WAT.replace("(local.get $ptr))\n  (func (export \"echo\")", "(drop (local.get $ptr)) (i32.const -16))\n  (func (export \"echo\")")
    assert code != LIMITS_WAT
    activate(runtime, tmp_path, manifest(), code)
    with pytest.raises(CallError) as failure:
        runtime.call("tests.limits", "echo", b"input")
    assert failure.value.kind == "abi" and "hm_alloc(5) returned" in str(failure.value)
