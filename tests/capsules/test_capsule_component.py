"""WebAssembly components: the Python-guest example, its capabilities and its limits."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time

import pytest

from capsule_testkit import BUILDER, DEADLINE_SLACK_MS
from hypermesh.capsules.build import build_capsule, world_wit
from hypermesh.capsules import component_stdio
from hypermesh.capsules.component_stdio import MAX_IDLE_DRAINS
from hypermesh.capsules.errors import CallError, LinkError
from hypermesh.capsules.kvstore import kv_namespace
from hypermesh.capsules.lifecycle import State
from hypermesh.capsules.receipt import sign_capsule


@pytest.fixture
def hello(runtime, python_capsule):
    capsule = runtime.install(python_capsule)
    assert capsule.state == State.VERIFIED, capsule.diagnostics
    runtime.activate(capsule.cid)
    return capsule


def test_python_guest_handles_calls(runtime, hello):
    assert runtime.call("examples.hello-python", "handle", b"ping").output == b"pong"
    assert runtime.call("examples.hello-python", "handle", b"\x00\xffbytes").output == b"\x00\xffbytes"
    assert runtime.call("examples.hello-python", "handle", b"").output == b""
    now = int(runtime.call("examples.hello-python", "handle", b"time").output)
    assert abs(now - time.time() * 1000) < 60_000


def test_python_guest_kv_is_persistent_per_signer_and_name(runtime, hello):
    assert [runtime.call("examples.hello-python", "handle", b"count").output for _ in range(3)] == [b"1", b"2", b"3"]
    assert runtime.kv.get(kv_namespace(BUILDER.peer_id, "examples.hello-python"), b"count") == b"3"


@pytest.mark.parametrize("size", [1, 8191, 8192, 8193, 65535, 65536, 65537, 100_000, 1 << 20])
def test_inputs_round_trip_through_stdio(runtime, hello, size):
    # handle-stdio: the input is stdin; the output goes through a 64 KiB pipe, drained while the guest writes.
    assert hello.sandbox.stdio_index is not None
    data = os.urandom(size)
    assert runtime.call("examples.hello-python", "handle", data).output == data


def test_concurrent_stdio_calls_each_get_their_own_output(runtime, hello):
    # Each call's drain thread is its own: more than a pipe's worth from 6 threads at once.
    inputs = [bytes([n]) * (200_000 + n) for n in range(6)]
    outputs: dict[int, bytes] = {}

    def one(n: int) -> None:
        outputs[n] = runtime.call("examples.hello-python", "handle", inputs[n]).output

    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(inputs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [outputs.get(n) == inputs[n] for n in range(len(inputs))] == [True] * len(inputs)
    # Idle drain threads wait for later calls, but only so many.
    drains = [thread for thread in threading.enumerate() if thread.name == "capsule-stdout"]
    assert len(drains) <= MAX_IDLE_DRAINS


def test_stdio_without_proc_falls_back_to_the_callback(runtime, python_capsule, tmp_path, monkeypatch):
    # Where /proc/self/fd cannot be opened, stdout is wasmtime's custom callback: same output, same limit.
    monkeypatch.setattr(component_stdio, "PIPE_PATH", str(tmp_path / "missing" / "{}"))
    capsule = _with_output_limit(runtime, python_capsule, tmp_path, 65536)
    data = os.urandom(65536)
    assert runtime.call(capsule.cid, "handle", data).output == data
    with pytest.raises(CallError) as failure:
        runtime.call(capsule.cid, "handle", bytes(65537))
    assert failure.value.kind == "output" and "more than its 65536-byte output limit" in str(failure.value)


def test_what_the_guest_prints_is_not_output(runtime, hello):
    assert runtime.call("examples.hello-python", "handle", b"print").output == b"printed"


def _with_resources(runtime, python_capsule, tmp_path, **resources):
    """The Python example with these ``resources`` in its manifest, installed and active."""
    directory = shutil.copytree(python_capsule, tmp_path / "resources", ignore=shutil.ignore_patterns("src"))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["resources"].update(resources)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    sign_capsule(directory, BUILDER)
    capsule = runtime.install(directory)
    runtime.activate(capsule.cid)
    return capsule


def _with_output_limit(runtime, python_capsule, tmp_path, limit: int):
    return _with_resources(runtime, python_capsule, tmp_path, max_output_bytes=limit)


def test_output_over_the_limit_through_stdio_fails_the_call(runtime, python_capsule, tmp_path):
    capsule = _with_output_limit(runtime, python_capsule, tmp_path, 65536)
    assert runtime.call(capsule.cid, "handle", bytes(65536)).output == bytes(65536)
    for size in (65537, 4 << 20):  # just over, and many pipes' worth over: the drain drops the rest
        with pytest.raises(CallError) as failure:
            runtime.call(capsule.cid, "handle", bytes(size))
        assert failure.value.kind == "output" and "more than its 65536-byte output limit" in str(failure.value)
    assert runtime.call(capsule.cid, "handle", b"ping").output == b"pong"


def test_spinning_guest_is_stopped_and_runtime_recovers(runtime, hello):
    started = time.perf_counter()
    with pytest.raises(CallError) as failure:
        runtime.call("examples.hello-python", "handle", b"spin")
    assert failure.value.kind in {"fuel", "timeout"}
    assert time.perf_counter() - started < 5 + 0.5
    assert runtime.call("examples.hello-python", "handle", b"ping").output == b"pong"


def test_component_epoch_deadline(runtime, python_capsule, tmp_path):
    capsule = _with_resources(runtime, python_capsule, tmp_path, fuel=100_000_000_000, timeout_ms=50)
    elapsed_ms = []
    for _ in range(3):
        started = time.perf_counter()
        with pytest.raises(CallError) as failure:
            runtime.call(capsule.cid, "handle", b"spin")
        elapsed_ms.append((time.perf_counter() - started) * 1000)
        assert failure.value.kind == "timeout", failure.value
    # Every run; the slack covers instantiating the 18 MB guest (~1 ms) too.
    assert all(50 <= ms <= 50 + DEADLINE_SLACK_MS for ms in elapsed_ms), elapsed_ms
    assert runtime.call(capsule.cid, "handle", b"ping").output == b"pong"


def test_a_call_on_an_instance_made_ahead_matches_one_that_instantiates_for_itself(runtime, hello):
    sandbox = hello.sandbox
    assert sandbox.ahead_ready.wait(60)
    made_ahead = runtime.call("examples.hello-python", "handle", b"ping")
    sandbox.instantiate_ahead = False
    for_itself = runtime.call("examples.hello-python", "handle", b"ping")
    assert made_ahead.output == for_itself.output == b"pong"
    # Fuel counts the call alone either way (instantiating costs some too).
    assert made_ahead.fuel_used == for_itself.fuel_used > 0


def test_an_instance_made_ahead_starts_its_deadline_at_its_call(runtime, python_capsule, tmp_path):
    timeout_ms = 300
    capsule = _with_resources(runtime, python_capsule, tmp_path, fuel=100_000_000_000, timeout_ms=timeout_ms)
    assert capsule.sandbox.ahead_ready.wait(60)
    time.sleep(2 * timeout_ms / 1000)  # the instance waits past its call's timeout: that time is not the call's
    started = time.perf_counter()
    with pytest.raises(CallError) as failure:
        runtime.call(capsule.cid, "handle", b"spin")
    elapsed_ms = (time.perf_counter() - started) * 1000
    assert failure.value.kind == "timeout"
    assert timeout_ms <= elapsed_ms <= timeout_ms + DEADLINE_SLACK_MS, elapsed_ms


def test_component_memory_limit(runtime, python_capsule, tmp_path):
    directory = shutil.copytree(python_capsule, tmp_path / "tiny", ignore=shutil.ignore_patterns("src"))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["resources"]["memory_bytes"] = 4 * 65536
    (directory / "manifest.json").write_text(json.dumps(manifest))
    sign_capsule(directory, BUILDER)
    capsule = runtime.install(directory)
    runtime.activate(capsule.cid)
    with pytest.raises(CallError) as failure:
        runtime.call(capsule.cid, "handle", b"ping")
    assert failure.value.kind in {"memory", "trap"} and "memory" in str(failure.value)


def test_component_importing_an_ungranted_interface_is_refused(runtime, python_capsule, tmp_path):
    # The guest imports log, kv, clock and random; a manifest that drops kv must not link.
    directory = shutil.copytree(python_capsule, tmp_path / "nokv", ignore=shutil.ignore_patterns("src"))
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["capabilities"]["requires"] = ["log", "clock", "random"]
    (directory / "manifest.json").write_text(json.dumps(manifest))
    sign_capsule(directory, BUILDER)
    capsule = runtime.install(directory)
    with pytest.raises(LinkError, match=r"imports hypermesh:capsule/kv@0.1.0, which needs capability 'kv'"):
        runtime.activate(capsule.cid)
    assert capsule.state == State.QUARANTINED


def test_world_imports_exactly_the_required_interfaces():
    text = world_wit({"kv", "log"}, bulk=True)
    assert "include bulk-handler;" in text
    assert "import kv;" in text and "import log;" in text and "import invoke;" not in text


def test_python_build_is_cached(python_capsule, tmp_path):
    directory = shutil.copytree(python_capsule, tmp_path / "again")
    started = time.perf_counter()
    build_capsule(directory)
    assert time.perf_counter() - started < 2
    assert (directory / "impl" / "capsule.wasm").read_bytes() == (python_capsule / "impl" / "capsule.wasm").read_bytes()


def test_host_function_failure_fails_only_that_call(runtime, hello):
    with pytest.raises(CallError) as failure:
        runtime.call("examples.hello-python", "handle", b"hoard")
    assert failure.value.kind == "host"
    assert "kv value of 70000 bytes is over the 65536-byte limit" in str(failure.value)
    assert runtime.kv.get("examples.hello-python", b"hoard") is None
    assert runtime.call("examples.hello-python", "handle", b"ping").output == b"pong"
