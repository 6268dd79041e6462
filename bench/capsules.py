"""Capsule runtime benchmark: prints ONE JSON object.

    .venv/bin/python bench/capsules.py [--quick] [--cache-dir DIR]

Every target of docs/CAPSULES.md is a ``checks`` entry
{name, value, unit, target, baseline, ratio, met}; ``baseline`` is what the
same work costs without our runtime (compiling from source, or a fresh
Python subprocess as the process-isolation alternative), ``ratio`` is
value / baseline. ``info`` holds figures without a target.

``--cache-dir`` reuses componentize-py builds and compiled artifacts (the
test suite's smoke run passes its cache); without it, everything is built
in a temporary directory.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import resources
from pathlib import Path

import trio
import wasmtime

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from benchlib import check as bench_check, machine, summary  # noqa: E402
from hypermesh.capsules import corecall
from hypermesh.capsules.admission import Verified, admit
from hypermesh.capsules.build import build_capsule
from hypermesh.capsules.engine import CapsuleEngine
from hypermesh.capsules.executor import CapsuleExecutor
from hypermesh.capsules.receipt import sign_capsule
from hypermesh.capsules.remote import RemoteRunService, run_remote
from hypermesh.capsules.runtime import CapsuleRuntime
from hypermesh.capsules.sandbox import ComponentSandbox
from hypermesh.capsules.trust import TrustPolicy
from hypermesh.transport import ping as ping_protocol
from hypermesh.transport.host import HostConfig, open_host
from hypermesh.transport.identity import Identity

BUILDER = Identity.from_seed(b"capsule-bench")
ECHO_SUBPROCESS = "import sys; sys.stdout.buffer.write(sys.stdin.buffer.read())"


def p50(samples: list[float]) -> float:
    return statistics.median(samples)


def timed(fn, repeat: int, warmup: int = 3) -> list[float]:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def interleaved(functions: dict, repeat: int, warmup: int = 100) -> dict[str, list[float]]:
    """Time several functions round-robin, so that a busy machine slows them all alike."""
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for iteration in range(warmup + repeat):
        for name, fn in functions.items():
            started = time.perf_counter()
            fn()
            if iteration >= warmup:
                samples[name].append(time.perf_counter() - started)
    return samples


def check(name: str, value: float, unit: str, target: float, baseline: float | None) -> dict:
    """A ``checks`` row (benchlib's shape) for a figure that must stay at or under ``target``."""
    return bench_check(name, round(value, 4), unit, target, None if baseline is None else round(baseline, 4),
                       value / baseline if baseline else None, value <= target)


def subprocess_round_trip(payload: bytes) -> None:
    result = subprocess.run([sys.executable, "-I", "-S", "-c", ECHO_SUBPROCESS], input=payload, capture_output=True, check=True)
    assert result.stdout == payload


def example(name: str, workdir: Path) -> Path:
    source = resources.files("hypermesh.capsules").joinpath("examples", name)
    target = workdir / name
    shutil.copytree(str(source), target, ignore=shutil.ignore_patterns("impl", "receipt.json", "wit", "__pycache__"))
    build_capsule(target)
    sign_capsule(target, BUILDER)
    return target


def policy() -> TrustPolicy:
    trust = TrustPolicy()
    trust.trust(BUILDER.peer_id)
    return trust


def bench_core(workdir: Path, repeat: int, checks: list, info: dict) -> None:
    capsule_dir = example("echo", workdir)
    runtime = CapsuleRuntime(workdir / "node-core", identity=BUILDER, policy=policy())
    capsule = runtime.install(capsule_dir)
    runtime.activate(capsule.cid)
    code = (capsule_dir / capsule.manifest.impl).read_bytes()
    resources_ = capsule.resources

    # Cold start through the runtime's real load path: the capsule is
    # unloaded and the engine's in-memory cache dropped, so each sample reads
    # the code from the store, deserializes its compiled artifact, links and
    # checks a sandbox, activates it and runs the first call.
    engine = runtime.engine
    compiled_before = engine.stats["compiled"]

    def cold_start() -> None:
        runtime.unload(capsule.cid)
        engine.forget_loaded()
        started = time.perf_counter()
        runtime.activate(capsule.cid)
        assert runtime.call(capsule.cid, "echo", b"x").output == b"x"
        samples.append(time.perf_counter() - started)

    samples: list[float] = []
    for _ in range(repeat + 3):
        cold_start()
    cold = p50(samples[3:])
    assert engine.stats["compiled"] == compiled_before, "a cold start compiled instead of loading the artifact"

    baseline_engine = engine.engine

    def from_source() -> None:
        module = wasmtime.Module(baseline_engine, code)
        store = wasmtime.Store(baseline_engine)
        store.set_fuel(resources_.fuel)
        store.set_epoch_deadline(1000)
        linker = wasmtime.Linker(baseline_engine)
        linker.define_func("hypermesh", "log", wasmtime.FuncType([wasmtime.ValType.i32()] * 2, []), lambda *a: None)
        instance = linker.instantiate(store, module)
        exports = instance.exports(store)
        exports["echo"](store, exports["hm_alloc"](store, 1), 1)

    compile_samples = timed(from_source, max(5, repeat // 10))
    checks.append(check("core_cold_start_from_cached_artifact_p50", cold * 1000, "ms", 0.3, p50(compile_samples) * 1000))

    # Warm call overhead: the runtime's whole call path (routing, in-flight
    # accounting, limits, ABI copies, result) minus the bare minimum wasmtime
    # work for the same call: a new store with the same limits, instantiate,
    # call the entry point.
    sandbox = capsule.sandbox
    pre = sandbox.pre
    engine = runtime.engine.engine
    echo = b"echo"

    def bare_call() -> None:
        store = wasmtime.Store(engine)
        store.set_fuel(resources_.fuel)
        store.set_epoch_deadline(runtime.engine.deadline_ticks(resources_.timeout_ms))
        instance = corecall.instantiate(pre, store)
        corecall.call_i32(store, corecall.func(store, instance, echo), 0, 0)

    def idiomatic_call() -> None:
        store = wasmtime.Store(engine)
        store.set_fuel(resources_.fuel)
        store.set_epoch_deadline(runtime.engine.deadline_ticks(resources_.timeout_ms))
        exports = pre.instantiate(store).exports(store)
        memory = exports["memory"]
        ptr = exports["hm_alloc"](store, 1)
        memory.write(store, b"x", ptr)
        packed = exports["echo"](store, ptr, 1)
        memory.read(store, packed >> 32, (packed >> 32) + (packed & 0xFFFFFFFF))

    def runtime_call() -> None:
        runtime.call("examples.echo", "echo", b"x")

    warm = interleaved({"bare": bare_call, "ours": runtime_call, "idiomatic": idiomatic_call}, repeat * 10)
    bare, ours, idiomatic = (p50(warm[name]) for name in ("bare", "ours", "idiomatic"))
    checks.append(check("core_warm_call_overhead_p50", (ours - bare) * 1e6, "us", 30, idiomatic * 1e6))
    info["core_warm_call_total_p50_us"] = round(ours * 1e6, 2)
    info["core_bare_wasmtime_call_p50_us"] = round(bare * 1e6, 2)
    info["core_wasmtime_py_idiomatic_call_p50_us"] = round(idiomatic * 1e6, 2)
    result = runtime.call("examples.echo", "echo", b"x")
    info["execution_receipt_sign_p50_us"] = round(p50(timed(lambda: result.unsigned_receipt() and BUILDER.sign(b"x" * 300), repeat)) * 1e6, 2)
    runtime.close()


def bench_component(workdir: Path, cache_dir: Path | None, repeat: int, quick: bool, checks: list, info: dict) -> None:
    capsule_dir = example("hello-python", workdir)
    code = (capsule_dir / "impl" / "capsule.wasm").read_bytes()
    info["component_bytes"] = len(code)
    artifacts = (cache_dir / "artifacts") if cache_dir else (workdir / "artifacts")
    engine = CapsuleEngine(artifacts)
    if not quick:
        started = time.perf_counter()
        wasmtime.component.Component(engine.engine, code)
        info["component_compile_from_source_s"] = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    engine.component(code)  # compiled or deserialized once, then kept in memory
    info["component_first_load_s"] = round(time.perf_counter() - started, 3)
    path = engine.artifact_path(hashlib.sha256(code).hexdigest())
    started = time.perf_counter()
    wasmtime.component.Component.deserialize_file(engine.engine, str(path))
    info["component_deserialize_ms"] = round((time.perf_counter() - started) * 1000, 2)

    runtime = CapsuleRuntime(workdir / "node-component", identity=BUILDER, policy=policy(), engine=engine)
    capsule = runtime.install(capsule_dir)
    runtime.activate(capsule.cid)
    sandbox: ComponentSandbox = capsule.sandbox

    # Every call instantiates the in-memory component in a new store; a node
    # does that ahead of the next call (ComponentSandbox), which this check
    # leaves out: here each call instantiates for itself.
    sandbox.instantiate_ahead = False
    first_call = p50(timed(lambda: sandbox.call("handle", b"ping"), repeat))
    sandbox.instantiate_ahead = True
    spawn = p50(timed(lambda: subprocess_round_trip(b"ping"), max(3, repeat // 10), 1))
    checks.append(check("component_instantiate_and_first_call_p50", first_call * 1000, "ms", 2, spawn * 1000))

    megabyte = os.urandom(1 << 20)

    def round_trip() -> None:
        assert runtime.call("examples.hello-python", "handle", megabyte).output == megabyte

    # Through handle-stdio (the component exports it), beside a fresh Python
    # subprocess echoing the same MB; round-robin, so load slows both alike.
    assert sandbox.stdio_index is not None
    big = interleaved({"component": round_trip, "subprocess": lambda: subprocess_round_trip(megabyte)},
                      max(11, repeat // 4), warmup=2)  # 11 pairs in --quick: 5 swung by 2x on a busy machine
    checks.append(check("component_1mb_round_trip_p50", p50(big["component"]) * 1000, "ms", 5,
                        p50(big["subprocess"]) * 1000))
    info["component_1mb_round_trip_ms"] = summary([sample * 1000 for sample in big["component"]])
    info["subprocess_1mb_round_trip_ms"] = summary([sample * 1000 for sample in big["subprocess"]])
    runtime.close()
    engine.close()


REMOTE_CLIENTS = 8
LOOPBACK = "/ip6/::1/udp/0/quic-v1"


async def bench_remote(workdir: Path, repeat: int, checks: list, info: dict) -> None:
    """A small call (echo of 1 byte) run by another node over /hm/capsule-run/1.0.0 on loopback QUIC.

    Both hosts live in this process; latency is one request/answer on a
    connection already open, with the capsule active. Throughput: 8 clients
    (8 peers, one call in flight each) for the same number of calls each.
    """
    capsule_dir = example("echo", workdir / "remote-src")
    runtime = CapsuleRuntime(workdir / "node-remote", identity=BUILDER, policy=policy())
    # Several hosts share this process: none may busy-poll its socket (see HostConfig).
    config = HostConfig(probe_datagram_size=False, busy_poll_seconds=0.0)
    try:
        async with open_host(BUILDER, [LOOPBACK], config) as server:
            service = RemoteRunService(server, CapsuleExecutor(runtime))
            service.install_handler()
            cid = runtime.install(capsule_dir).cid
            async with open_host(Identity.generate(), config=config) as client:
                await client.connect(server.listen_addrs()[0])

                async def one_call(host) -> float:
                    started = time.perf_counter()
                    outcome = await run_remote(host, server.peer_id, cid, "echo", b"x")
                    elapsed = time.perf_counter() - started
                    assert outcome.output == b"x"
                    return elapsed

                for _ in range(20):  # warm-up: activation, stream and code paths
                    await one_call(client)
                latencies = summary([await one_call(client) * 1000 for _ in range(repeat * 5)])
                # Baseline: the bare round trip, a ping on the same connection.
                rtts = summary([rtt * 1000 for rtt in await ping_protocol.ping(client, server.peer_id, repeat * 5)])
            checks.append(check("remote_run_small_call_p50", latencies["p50"], "ms", 2, rtts["p50"]))
            info["remote_run_latency_ms"] = latencies
            info["loopback_ping_rtt_ms"] = rtts

            async with contextlib.AsyncExitStack() as stack:
                clients = [await stack.enter_async_context(open_host(Identity.generate(), config=config))
                           for _ in range(REMOTE_CLIENTS)]
                for host in clients:
                    await host.connect(server.listen_addrs()[0])
                    await one_call(host)
                calls_each = repeat * 5

                async def client_loop(host) -> None:
                    for _ in range(calls_each):
                        await one_call(host)

                started = time.perf_counter()
                async with trio.open_nursery() as nursery:
                    for host in clients:
                        nursery.start_soon(client_loop, host)
                elapsed = time.perf_counter() - started
            info["remote_runs_per_s_8_clients"] = round(REMOTE_CLIENTS * calls_each / elapsed, 1)
            info["remote_refusals"] = {key: value for key, value in service.counters.items() if key != "ran"}
    finally:
        runtime.close()


def bench_admission(workdir: Path, repeat: int, checks: list, info: dict) -> None:
    directory = workdir / "big"
    (directory / "impl").mkdir(parents=True)
    (directory / "spec").mkdir()
    shutil.copy(example("echo", workdir / "for-big") / "manifest.json", directory / "manifest.json")
    (directory / "impl" / "echo.wasm").write_bytes(wasmtime.wat2wasm("(module)"))
    payload = os.urandom(5 * 1024 * 1024 - 1024)
    (directory / "spec" / "model.bin").write_bytes(payload)
    sign_capsule(directory, BUILDER)
    trust = policy()
    assert isinstance(admit(directory, trust), Verified)
    samples = timed(lambda: admit(directory, trust), repeat)
    hashing = p50(timed(lambda: hashlib.sha256(payload).digest(), repeat))
    checks.append(check("admission_5mb_capsule_p50", p50(samples) * 1000, "ms", 50, hashing * 1000))
    from hypermesh.capsules.chunks import ChunkStore

    started = time.perf_counter()
    ChunkStore(workdir / "chunks").pack(directory)
    info["chunk_pack_5mb_s"] = round(time.perf_counter() - started, 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations: a smoke run")
    parser.add_argument("--cache-dir", type=Path, help="reuse builds and compiled artifacts from here")
    args = parser.parse_args()
    if args.cache_dir:
        os.environ.setdefault("HYPERMESH_BUILD_CACHE", str(args.cache_dir / "builds"))
    repeat = 20 if args.quick else 200
    checks: list[dict] = []
    # The 1-, 5- and 15-minute load averages around the run: on a shared machine they say what the figures are worth.
    info: dict = {"load_average_at_start": [round(value, 2) for value in os.getloadavg()]}
    with tempfile.TemporaryDirectory(prefix="capsule-bench-") as tmp:
        workdir = Path(tmp)
        bench_core(workdir, repeat, checks, info)
        bench_component(workdir, args.cache_dir, repeat, args.quick, checks, info)
        bench_admission(workdir, max(5, repeat // 10), checks, info)
        trio.run(bench_remote, workdir, repeat, checks, info)
    info["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    print(json.dumps({"bench": "capsules", "quick": args.quick, "wasmtime": "50", "machine": machine(),
                      "checks": checks, "info": info}, indent=2))


if __name__ == "__main__":
    main()
