"""DHT benchmark: our Kademlia over real QUIC hosts against the `kademlia` package and py-libp2p.

    .venv/bin/python bench/dht.py [--quick] [--nodes 200] [--workers 4] [--services 10000]
                                  [--lookups 200] [--skip-baselines]

Runs everything in one go on loopback and prints ONE JSON object on stdout.

Ours: ``--nodes`` hosts (each its own Ed25519 identity, its own QUIC endpoint
on 127.0.0.1 and its own SQLite DHT store in a temp dir) spread over
``--workers`` worker processes, each running its share of hosts in one trio
loop. Worker 0's first node is the bootstrap node; every other node
bootstraps through it, then (once all are up) every node bootstraps again so
that early nodes learn the late ones. The parent drives the phases over the
workers' stdin/stdout (one JSON line per command and per answer; each answer
carries the id of its command, and a late answer to a command whose phase
gave up on it is dropped, counted in ``stale_answers_dropped``); every
latency is timed inside the worker around the one call it measures.

1. find_providers: L (provider, seeker) pairs of distinct random nodes; the
   provider provides a fresh CID and waits until it is published, then the
   seeker runs ``find_providers(cid, wanted=1)`` (one lookup at a time in
   the whole network): the time to the first provider. The same pairs run
   again with wanted=20 (the API default, as kubo's ``findprovs``): with one
   provider the lookup runs to convergence. A lookup succeeds if the provider
   is in the answer; success rates are over every lookup asked for (errors,
   timeouts and lookups a capped phase never ran count as failures), and
   lookups the seeker answers from its own store are reported apart
   (``local_hits``) from the ``remote`` ones the checks use.
2. services: ``--services`` distinct names registered by nodes of every
   worker (``register_services`` with ``--register-batch`` names per call,
   which publishes them with one lookup per keyspace region; bounded calls
   in flight per worker; capped in time); then for a sample of names a random node resolves each name once
   (uncached: a GET_VALUE lookup) and again (cached: the figure of the target).
3. baselines, as subprocesses in the interop venv: bench/baselines/kademlia_pkg.py
   at the same node count, bench/baselines/pylibp2p_kad.py at the largest size
   it sets up within its 5-minute cap (nodes join one at a time until the next
   join would pass it). Each is compared with our remote lookups at its own
   ``wanted`` (the kademlia package's get ends at the first value: 1;
   py-libp2p's find_providers runs with count 1), its lookups answered from
   the asking node's own store timed apart, and the check's name states
   ``wanted`` and both node counts.

Each phase's metrics include the workers' garbage collections
(``bench_gc_gen<N>_collections``, ``_seconds`` of wall clock and
``_cpu_seconds``, and pauses over 100 ms), summed over workers and counted
from the start: fifty nodes share a worker's heap, so its pauses are longer
than a node process's. ``HYPERMESH_BENCH_GC=young,middle,old`` runs the
workers with other collector thresholds than a node's.

Every phase has a time cap; a phase that hits it reports null and a reason.
A baseline that fails is reported with its cause (in ``baselines`` and in
its check's target), and the JSON is printed whatever fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import INTEROP_PY, check, get, machine, run_json, summary  # noqa: E402

LISTEN = "/ip4/127.0.0.1/udp/0/quic-v1"


# ================================================================== worker


def worker_main(args) -> None:
    import logging

    import trio

    from hypermesh.node.runtime import tune_garbage_collector

    # HYPERMESH_BENCH_LOG=WARNING puts, e.g., unconfirmed provides in the worker logs (--keep-data keeps them).
    logging.basicConfig(level=os.environ.get("HYPERMESH_BENCH_LOG", "ERROR").upper(), stream=sys.stderr)
    # As a node process does (`hypermesh run`).
    tune_garbage_collector()
    if os.environ.get("HYPERMESH_BENCH_GC"):  # "young,middle,old": try other collector thresholds than a node's
        import gc

        gc.set_threshold(*map(int, os.environ["HYPERMESH_BENCH_GC"].split(",")))
    GC_PAUSES.install()
    profile_dir = os.environ.get("HYPERMESH_BENCH_PROFILE")  # a directory: each worker dumps cProfile stats there
    if profile_dir:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            trio.run(_worker, args)
        finally:
            profiler.disable()
            profiler.dump_stats(os.path.join(profile_dir, f"worker{args.index}.prof"))
    else:
        try:
            trio.run(_worker, args)
        except BaseException as exc:
            # Fifty nested host nurseries bury the cause past the traceback
            # module's group depth: print the leaves, each once.
            import traceback

            seen = set()
            for leaf in _leaf_exceptions(exc):
                text = "".join(traceback.format_exception(leaf))
                if text not in seen:
                    seen.add(text)
                    sys.stderr.write(text)
            raise SystemExit(1) from None


def _leaf_exceptions(exc: BaseException):
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaf_exceptions(inner)
    else:
        yield exc


async def _worker(args) -> None:
    import contextlib

    import trio

    from hypermesh.dht.discovery import ServiceOffer, open_discovery
    from hypermesh.dht.keys import Cid
    from hypermesh.transport.host import HostConfig, open_host
    from hypermesh.transport.identity import Identity

    def emit(obj) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    data = Path(args.data_dir)
    hosts, nodes = [], []
    # Fifty hosts share this process and four processes share the cores: a
    # host busy-polling its socket would only take CPU from the others.
    config = HostConfig(probe_datagram_size=False, busy_poll_seconds=0.0)
    async with contextlib.AsyncExitStack() as stack:
        bootstrap = [args.bootstrap] if args.bootstrap else []

        async def start(i: int) -> None:
            host = await stack.enter_async_context(open_host(Identity.generate(), [LISTEN], config))
            boot = bootstrap if (bootstrap or i) else []
            node = await stack.enter_async_context(open_discovery(host, data / f"n{i}", bootstrap=boot))
            hosts.append(host)
            nodes.append(node)
            if not bootstrap and i == 0:
                addr = host.listen_addrs()[0]
                bootstrap.append(addr if "/p2p/" in addr else f"{addr}/p2p/{host.peer_id}")
                emit({"bootstrap": bootstrap[0]})

        for i in range(args.count):
            await start(i)

        async def bootstrap_all(limit: int) -> tuple[int, int]:
            ok = failed = 0
            limiter = trio.CapacityLimiter(limit)

            async def one(node) -> None:
                nonlocal ok, failed
                async with limiter:
                    with trio.move_on_after(60):
                        await node.service.bootstrap()
                        ok += 1
                        return
                    failed += 1

            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(one, node)
            return ok, failed

        await bootstrap_all(16)
        emit({"ready": True, "peers": [str(h.peer_id) for h in hosts]})

        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline)
            if not line:
                return
            cmd = json.loads(line)
            op = cmd["cmd"]

            def answer(obj, command_id=cmd.get("id")) -> None:
                # Tagged with the command it answers: the parent drops a late
                # answer to a command it gave up on instead of taking it for the next.
                emit({"answer_to": command_id, **obj})
            if op == "quit":
                answer({"bye": True})
                return
            if op == "metrics":
                answer({"metrics": _process_metrics(nodes)})
            elif op == "cpu":
                # CPU this worker uses while nobody asks it anything: keepalives,
                # timers, DHT maintenance and any work left from earlier phases.
                began, cpu = time.perf_counter(), time.process_time()
                await trio.sleep(cmd["seconds"])
                answer({"cpu_percent": 100 * (time.process_time() - cpu) / (time.perf_counter() - began)})
            elif op == "rebootstrap":
                t = time.perf_counter()
                ok, failed = await bootstrap_all(16)
                sizes = sorted(len(n.service.core.routing) for n in nodes)
                answer({"ok": ok, "failed": failed, "seconds": round(time.perf_counter() - t, 3), "routing": sizes})
            elif op == "provide":
                # A few at a time per worker: publishing is not what this phase
                # measures, and a network-wide burst of 200 region lookups only
                # measures two cores' overload.
                ms, failed = [], 0
                limiter = trio.CapacityLimiter(cmd.get("concurrency", 4))
                # One deadline for the whole command, so that the answer (with what did not
                # finish counted as failed) reaches the parent before its phase cap.
                deadline = trio.current_time() + cmd.get("timeout", 60)

                async def provide_one(index: int, cid) -> None:
                    nonlocal failed
                    async with limiter:
                        began = time.perf_counter()
                        nodes[index].provide(cid)
                        with trio.move_on_at(deadline):
                            await nodes[index].wait_provided(cid)
                            ms.append((time.perf_counter() - began) * 1000)
                            return
                        failed += 1

                async with trio.open_nursery() as nursery:
                    for index, text in cmd["items"]:
                        nursery.start_soon(provide_one, index, Cid.for_string(text))
                answer({"ms": ms, "failed": failed})
            elif op == "find":
                results = []
                for index, text, provider in cmd["items"]:
                    cid = Cid.for_string(text)
                    local = bool(nodes[index].service.store.get_providers(cid.multihash, nodes[index].service.now(), 1))
                    t = time.perf_counter()
                    found, error, result = False, None, None
                    with trio.move_on_after(cmd.get("timeout", 30)) as scope:
                        try:
                            result = await nodes[index].service.get_providers(cid.multihash, cmd["wanted"])
                            found = any(str(p.peer_id) == provider for p in result.providers)
                        except Exception as exc:  # noqa: BLE001
                            error = f"{type(exc).__name__}: {exc}"
                    if scope.cancelled_caught:
                        error = "timeout"
                    outcome = {"ms": (time.perf_counter() - t) * 1000, "found": found, "local": local,
                               "error": error, "queries": result.queries if result else None,
                               "hops": result.hops if result else None}
                    if not found:  # for the parent's diagnosis: which peers the lookup heard from
                        outcome.update(key=text, seeker=str(hosts[index].peer_id),
                                       answered=[str(p.peer_id) for p in result.closest] if result else [])
                    results.append(outcome)
                answer({"results": results})
            elif op == "holders":
                # Which of this worker's nodes hold a provider record for each key (any provider).
                held = {}
                for text in cmd["keys"]:
                    multihash = Cid.for_string(text).multihash
                    held[text] = [str(hosts[i].peer_id) for i, node in enumerate(nodes)
                                  if node.service.store.get_providers(multihash, node.service.now(), 1)]
                answer({"holders": held})
            elif op == "register":
                # Each node registers its share of the names in batches of
                # cmd["batch"] (register_services: one lookup per keyspace region).
                limiter = trio.CapacityLimiter(cmd["concurrency"])
                stored, failed, done = [], 0, 0
                errors: dict[str, int] = {}
                register_ms: list[float] = []
                registered_names: list[str] = []
                t = time.perf_counter()
                per_node: dict[int, list[str]] = {}
                for i, name in enumerate(cmd["names"]):
                    per_node.setdefault(i % len(nodes), []).append(name)
                batches = [(index, names[first:first + cmd["batch"]]) for index, names in per_node.items()
                           for first in range(0, len(names), cmd["batch"])]

                async def register(index: int, names: list[str]) -> None:
                    nonlocal failed, done
                    # Names that fail (or that no peer stored) are tried once
                    # more, as a service owner (or the node's renewal) would.
                    for attempt in range(2):
                        async with limiter:
                            began = time.perf_counter()
                            try:
                                with trio.fail_after(60):
                                    outcome = await nodes[index].register_services(
                                        [ServiceOffer(name, "/bench/1.0.0", weight=100, ttl=3600) for name in names])
                            except Exception as exc:  # noqa: BLE001
                                reason = "timeout (60 s)" if isinstance(exc, trio.TooSlowError) else f"{type(exc).__name__}: {exc}"
                                reason = f"attempt {attempt + 1}: {reason[:200]}"
                                errors[reason] = errors.get(reason, 0) + len(names)
                                continue
                            register_ms.append((time.perf_counter() - began) * 1000)
                            ok = [name for name in names if outcome[name]]
                            stored.extend(outcome[name] for name in ok)
                            registered_names.extend(ok)
                            done += len(ok)
                            names = [name for name in names if not outcome[name]]
                            if not names:
                                return
                            errors[f"attempt {attempt + 1}: stored nowhere"] = errors.get(
                                f"attempt {attempt + 1}: stored nowhere", 0) + len(names)
                    failed += len(names)

                with trio.move_on_after(cmd["cap"]) as scope:
                    async with trio.open_nursery() as nursery:
                        for index, names in batches:
                            nursery.start_soon(register, index, names)
                answer({"registered": done, "failed": failed, "capped": scope.cancelled_caught, "errors": errors, "ms": register_ms, "names": registered_names,
                      "seconds": round(time.perf_counter() - t, 3),
                      "stored_p50": statistics.median(stored) if stored else None})
            elif op == "resolve":
                results = []
                for index, name in cmd["items"]:
                    node = nodes[index]
                    entry = {"first_ms": None, "cached_ms": None, "instances": 0}
                    with trio.move_on_after(cmd.get("timeout", 30)):
                        t = time.perf_counter()
                        records = await node.resolve_service(name)
                        entry["first_ms"] = (time.perf_counter() - t) * 1000
                        entry["instances"] = len(records)
                        t = time.perf_counter()
                        again = await node.resolve_service(name)
                        entry["cached_ms"] = (time.perf_counter() - t) * 1000
                        entry["cached_same"] = [r.peer_id for r in again] == [r.peer_id for r in records]
                    results.append(entry)
                answer({"results": results})


class GcPauses:
    """Counts this process's garbage collections and the time they stop it.

    Fifty nodes share a worker's heap, so a full collection here scans what
    fifty node processes would each scan a fiftieth of: its pauses are worth
    seeing beside the lookup latencies they may stretch.
    """

    LONG = 0.1  # seconds: a pause this long shows in a lookup's p99

    def __init__(self) -> None:
        self.counts: dict[str, float] = {}
        self._started = self._started_cpu = 0.0
        # HYPERMESH_BENCH_GC_SAMPLE=N: every Nth collection, the worker's stderr
        # (kept with --keep-data) gets the types of what it freed.
        self.sample_every = int(os.environ.get("HYPERMESH_BENCH_GC_SAMPLE", "0"))
        self._collections = 0

    def install(self) -> None:
        import gc

        gc.callbacks.append(self._on_collection)

    def _on_collection(self, phase: str, info: dict) -> None:
        if self.sample_every:
            self._sample(phase, info)
        if phase == "start":
            self._started, self._started_cpu = time.perf_counter(), time.thread_time()
            return
        paused = time.perf_counter() - self._started
        generation = info["generation"]
        for key, value in ((f"bench_gc_gen{generation}_collections", 1), (f"bench_gc_gen{generation}_seconds", paused),
                           (f"bench_gc_gen{generation}_cpu_seconds", time.thread_time() - self._started_cpu),
                           (f"bench_gc_gen{generation}_collected", info["collected"]),
                           ("bench_gc_pauses_over_100ms", paused > self.LONG)):
            self.counts[key] = self.counts.get(key, 0.0) + value

    def _sample(self, phase: str, info: dict) -> None:
        import collections
        import gc

        if phase == "start":
            self._collections += 1
            if self._collections % self.sample_every == 0:
                gc.set_debug(gc.DEBUG_SAVEALL)  # this collection keeps what it frees in gc.garbage
        elif gc.get_debug() & gc.DEBUG_SAVEALL:
            gc.set_debug(0)
            freed = collections.Counter(type(o).__qualname__ for o in gc.garbage)
            gc.garbage.clear()
            sys.stderr.write(f"gc sample: generation {info['generation']} freed {info['collected']}: "
                             f"{freed.most_common(25)}\n")


GC_PAUSES = GcPauses()


def _process_metrics(nodes) -> dict[str, float]:
    """This worker's hypermesh counters and gauges, summed over its nodes,
    and its garbage collector's pauses.

    The transport's are process-wide; each DHT node has a registry of its own.
    """
    from prometheus_client import REGISTRY

    values: dict[str, float] = dict(GC_PAUSES.counts)
    families = [f for registry in (REGISTRY, *(n.service.metrics.registry for n in nodes)) for f in registry.collect()]
    for family in families:
        if not family.name.startswith("hypermesh_") or family.type not in ("counter", "gauge"):
            continue
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            key = f"{sample.name}{{{labels}}}" if labels else sample.name
            values[key] = values.get(key, 0.0) + sample.value
    return values


# ================================================================== parent


class PhaseTimeout(Exception):
    pass


class Worker:
    def __init__(self, index: int, count: int, data_dir: Path, bootstrap: str | None):
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--index", str(index),
                   "--count", str(count), "--data-dir", str(data_dir)]
        if bootstrap:
            command += ["--bootstrap", bootstrap]
        self.index = index
        data_dir.mkdir(parents=True, exist_ok=True)
        self.stderr = open(data_dir / "stderr.log", "w+")
        # Unbuffered pipes: select() must see every answer line that has not been read yet.
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        stderr=self.stderr, bufsize=0)
        self.peers: list[str] = []
        self.stale_answers = 0
        self._last_command_id = 0

    def ask(self, command: dict) -> int:
        """Send a command; returns the id its answer will carry."""
        self._last_command_id += 1
        self.send({**command, "id": self._last_command_id})
        return self._last_command_id

    def answer(self, command_id: int, deadline: float) -> dict:
        """The answer to command ``command_id``. Answers to earlier commands
        (late, after their phase gave up on them) are counted and dropped."""
        while True:  # bounded by the deadline: read() raises PhaseTimeout at it
            message = self.read(deadline)
            if message.get("answer_to") == command_id:
                return message
            self.stale_answers += 1

    def send(self, obj) -> None:
        data = memoryview((json.dumps(obj) + "\n").encode())
        while data:
            data = data[self.process.stdin.write(data):]

    def read(self, deadline: float) -> dict:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PhaseTimeout(f"worker {self.index} did not answer in time")
            ready, _, _ = select.select([self.process.stdout], [], [], remaining)
            if ready:
                line = self.process.stdout.readline()
                if not line:
                    self.stderr.seek(0)
                    tail = self.stderr.read()[-800:]
                    raise PhaseTimeout(f"worker {self.index} exited (rc={self.process.poll()}): {tail}")
                return json.loads(line.decode())

    def stop(self) -> None:
        try:
            if self.process.poll() is None:
                self.send({"cmd": "quit"})
                self.process.wait(10)
        except Exception:  # noqa: BLE001
            pass
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.stderr.close()


def ask_all(workers: list[Worker], commands: dict[int, dict], cap: float) -> dict[int, dict]:
    """Send each worker its command at once, collect every answer by ``cap`` seconds from now."""
    deadline = time.monotonic() + cap
    ids = {index: workers[index].ask(command) for index, command in commands.items()}
    return {index: workers[index].answer(ids[index], deadline) for index in commands}


def run_ours(args, tmp: Path, report: dict) -> None:
    rng = random.Random(args.seed)
    ours: dict = {"nodes": args.nodes, "workers": args.workers, "errors": {}}
    report["hypermesh"] = ours
    counts = [args.nodes // args.workers + (1 if i < args.nodes % args.workers else 0) for i in range(args.workers)]
    workers: list[Worker] = []
    try:
        # --- setup
        t0 = time.monotonic()
        deadline = t0 + args.setup_cap
        first = Worker(0, counts[0], tmp / "w0", None)
        workers.append(first)
        bootstrap = first.read(deadline)["bootstrap"]
        for i in range(1, args.workers):
            workers.append(Worker(i, counts[i], tmp / f"w{i}", bootstrap))
        for worker in workers:
            worker.peers = worker.read(deadline)["peers"]
        ours["first_bootstrap_s"] = round(time.monotonic() - t0, 2)
    except PhaseTimeout as exc:
        ours["errors"]["setup"] = str(exc)
        for worker in workers:
            worker.stop()
        return
    _run_phases(args, rng, workers, ours, t0)


def sum_counts(counts) -> dict[str, int]:
    total: dict[str, int] = {}
    for count in counts:
        for key, value in count.items():
            total[key] = total.get(key, 0) + value
    return total


def background_cpu(workers: list[Worker], seconds: float = 5.0) -> list[float]:
    """Each worker's CPU use (percent of one core) over ``seconds`` with no commands running."""
    answers = ask_all(workers, {w.index: {"cmd": "cpu", "seconds": seconds} for w in workers}, seconds + 30)
    return [round(answers[w.index]["cpu_percent"], 1) for w in workers]


def record_metrics(workers: list[Worker], ours: dict, phase: str) -> None:
    """Sum the workers' counters into ours["metrics"][phase] (failures, drops, refusals)."""
    try:
        answers = ask_all(workers, {w.index: {"cmd": "metrics"} for w in workers}, 30)
    except PhaseTimeout as exc:
        ours["errors"][f"metrics_{phase}"] = str(exc)
        return
    total = sum_counts(answer["metrics"] for answer in answers.values())
    ours.setdefault("metrics", {})[phase] = {k: round(v, 3) for k, v in sorted(total.items()) if v}


def progress(ours: dict, phase: str) -> None:
    print(f"[dht bench] {phase} done: " + json.dumps({k: v for k, v in ours.items() if k not in ("errors", "metrics")})[-600:],
          f"errors={ours['errors']}", file=sys.stderr, flush=True)


def lookup_figures(results: list[dict], wanted: int, requested: int) -> dict:
    """find_providers figures over *all* lookups asked for: a failure, a
    timeout or a lookup that never ran (its phase was cut short) counts
    against the success rate. Lookups the seeker could answer from its own
    store (it is one of the provider's k closest peers) are reported apart:
    ``remote`` covers only the others, and is what the checks use."""
    remote = [r for r in results if not r["local"]]
    remote_found = [r for r in remote if r["found"]]
    local = [r for r in results if r["local"]]
    not_run = requested - len(results)
    errors: dict[str, int] = {"not run (phase cut short)": not_run} if not_run else {}
    for r in results:
        if not r["found"]:
            reason = r["error"] or "provider not in the answer"
            errors[reason] = errors.get(reason, 0) + 1
    return {
        "wanted": wanted,
        "lookups": requested,
        "found": sum(1 for r in results if r["found"]),
        "success_rate": round(sum(1 for r in results if r["found"]) / max(1, requested), 4),
        "local_hits": {"lookups": len(local), "found": sum(1 for r in local if r["found"]),
                       "ms": summary([r["ms"] for r in local if r["found"]])},
        "remote": {
            "lookups": len(remote) + not_run,
            "found": len(remote_found),
            "success_rate": round(len(remote_found) / (len(remote) + not_run), 4) if remote or not_run else None,
            # Successful lookups only; failures are in the success rate.
            "ms": summary([r["ms"] for r in remote_found]),
        },
        "failures": errors,
        # Lookups that ended without the provider (no error, no timeout), with the diagnosis
        # diagnose_failed_lookups adds: where the record was and whom the lookup heard from.
        "not_found": [r for r in remote if not r["found"] and not r["error"]][:10],
        "queries_p50": statistics.median([r["queries"] for r in remote_found if r["queries"] is not None] or [0]),
        # The slowest lookups, to see what their time went on.
        "slowest": sorted(remote_found, key=lambda r: -r["ms"])[:5],
    }


def diagnose_failed_lookups(workers: list[Worker], failed: list[dict], k: int = 20) -> None:
    """Add to each lookup that ended without the provider where its record
    was: the keyspace ranks (0 = closest to the key, among all nodes) of the
    nodes holding it, and of the nodes the lookup heard from."""
    if not failed:
        return
    from hypermesh.dht.keys import Cid, kad_key, peer_key
    from hypermesh.transport.identity import PeerId

    holders: dict[str, set[str]] = {}
    try:
        answers = ask_all(workers, {w.index: {"cmd": "holders", "keys": [r["key"] for r in failed]} for w in workers}, 60)
    except PhaseTimeout:
        return
    for answer in answers.values():
        for text, peers in answer["holders"].items():
            holders.setdefault(text, set()).update(peers)
    everyone = [p for w in workers for p in w.peers]
    for record in failed:
        target = kad_key(Cid.for_string(record["key"]).multihash)
        ranked = sorted(everyone, key=lambda p: peer_key(PeerId.from_base58(p)) ^ target)
        rank = {p: i for i, p in enumerate(ranked)}
        held = holders.get(record["key"], set())
        record["holder_ranks"] = sorted(rank[p] for p in held if p in rank)
        record["k_closest_holding"] = sum(1 for p in ranked[:k] if p in held)
        record["answered_ranks"] = sorted(rank[p] for p in record.pop("answered") if p in rank)
        record["seeker_rank"] = rank.get(record["seeker"])


def _run_phases(args, rng, workers, ours, t0) -> None:
    try:
        answers = ask_all(workers, {w.index: {"cmd": "rebootstrap"} for w in workers}, args.setup_cap)
        ours["setup_s"] = round(time.monotonic() - t0, 2)
        sizes = sorted(s for a in answers.values() for s in a["routing"])
        ours["routing_table_size"] = {"min": sizes[0], "p50": sizes[len(sizes) // 2], "max": sizes[-1]}
        ours["bootstrap_failures"] = sum(a["failed"] for a in answers.values())
        # A node that knows nobody can only answer from its own store: said, not hidden in a minimum.
        ours["nodes_with_empty_routing_table"] = sum(1 for size in sizes if size == 0)
        record_metrics(workers, ours, "setup")
        progress(ours, "setup")
    except PhaseTimeout as exc:
        ours["errors"]["setup"] = str(exc)
        return
    where = [(w.index, i) for w in workers for i in range(len(w.peers))]
    peer_of = {(w.index, i): p for w in workers for i, p in enumerate(w.peers)}

    # --- find_providers
    try:
        # Keepalives and maintenance alone, before any provide: the floor under every later figure.
        ours["background_cpu_percent_after_setup"] = background_cpu(workers)
        pairs = [rng.sample(where, 2) for _ in range(args.lookups)]
        keys = [f"dht-bench-{args.seed}-{j}-{rng.random()}" for j in range(args.lookups)]
        t = time.monotonic()
        deadline = t + args.provide_cap
        by_worker: dict[int, list] = {}
        for (provider, _), key in zip(pairs, keys):
            by_worker.setdefault(provider[0], []).append([provider[1], key])
        answers = ask_all(workers, {w: {"cmd": "provide", "items": items, "timeout": args.provide_cap - 5}
                                    for w, items in by_worker.items()}, args.provide_cap)
        provide_ms = [ms for a in answers.values() for ms in a["ms"]]
        ours["provide_ms"] = summary(provide_ms)
        ours["provide_failed"] = sum(a["failed"] for a in answers.values())
        ours["provide_phase_s"] = round(time.monotonic() - t, 2)
        ours["background_cpu_percent_before_lookups"] = background_cpu(workers)
        record_metrics(workers, ours, "provide")

        # wanted=1: time to the first provider; wanted=20 (the API default, as
        # kubo's findprovs): the lookup runs to convergence. Same pairs for both.
        order: dict[int, list] = {}
        for (provider, seeker), key in zip(pairs, keys):
            order.setdefault(seeker[0], []).append([seeker[1], key, peer_of[provider]])
        for wanted in (1, 20):
            deadline = time.monotonic() + args.lookup_cap
            results = []
            try:
                # One worker at a time, its lookups one after another: one lookup in flight network-wide.
                for w, items in order.items():
                    command_id = workers[w].ask({"cmd": "find", "items": items, "wanted": wanted})
                    results += workers[w].answer(command_id, deadline)["results"]
            except PhaseTimeout as exc:  # what ran is reported; what did not counts as failed
                ours["errors"][f"find_providers_wanted{wanted}"] = str(exc)
            ours[f"find_providers_wanted{wanted}"] = lookup_figures(results, wanted, len(pairs))
            diagnose_failed_lookups(workers, ours[f"find_providers_wanted{wanted}"]["not_found"])
    except PhaseTimeout as exc:
        ours["errors"]["find_providers"] = str(exc)
    record_metrics(workers, ours, "find_providers")
    progress(ours, "find_providers")

    # --- services
    try:
        names = [f"svc-{args.seed}-{i}" for i in range(args.services)]
        share: dict[int, list] = {w.index: [] for w in workers}
        for i, name in enumerate(names):
            share[i % len(workers)].append(name)
        t = time.monotonic()
        answers = ask_all(workers, {w: {"cmd": "register", "names": ns, "concurrency": args.register_concurrency,
                                        "batch": args.register_batch, "cap": args.register_cap}
                                    for w, ns in share.items()},
                          args.register_cap + 30)
        registered = sum(a["registered"] for a in answers.values())
        ours["services"] = {
            "requested": args.services,
            "registered": registered,
            "failed": sum(a["failed"] for a in answers.values()),
            "capped": any(a["capped"] for a in answers.values()),
            "registration_s": round(time.monotonic() - t, 2),
            "registrations_per_s": round(registered / max(1e-9, time.monotonic() - t), 1),
            "stored_at_p50": statistics.median([a["stored_p50"] for a in answers.values() if a["stored_p50"]] or [0]),
            "concurrency_per_worker": args.register_concurrency,
            "names_per_call": args.register_batch,
            # Per register_services call, not per name.
            "register_ms": summary([ms for a in answers.values() for ms in a.get("ms", [])]),
            "errors": sum_counts(a.get("errors", {}) for a in answers.values()),
        }
        record_metrics(workers, ours, "register")
        progress(ours, "register")
        # Resolve a sample of the names (that registered or not: the worker knows which; a failed one
        # resolves to nothing and is reported as such).
        # Only names that were registered: an unknown name costs a full lookup (and is no cache test).
        done_names = [n for a in answers.values() for n in a.get("names", [])]
        sample = rng.sample(done_names, min(args.resolves, len(done_names)))
        order: dict[int, list] = {}
        for name in sample:
            w, i = rng.choice(where)
            order.setdefault(w, []).append([i, name])
        deadline = time.monotonic() + args.lookup_cap
        results = []
        for w, items in order.items():
            command_id = workers[w].ask({"cmd": "resolve", "items": items})
            results += workers[w].answer(command_id, deadline)["results"]
        ok = [r for r in results if r["instances"]]
        ours["resolve_service"] = {
            "resolves": len(results),
            "found": len(ok),
            "success_rate": round(len(ok) / max(1, len(results)), 4),
            "first_ms": summary([r["first_ms"] for r in ok]),
            "cached_ms": summary([r["cached_ms"] for r in ok]),
            "cached_same_answer": sum(1 for r in ok if r.get("cached_same")),
        }
    except PhaseTimeout as exc:
        ours["errors"]["services"] = str(exc)
    finally:
        ours["stale_answers_dropped"] = sum(w.stale_answers for w in workers)
        for worker in workers:
            worker.stop()


# --------------------------------------------------------------- baselines


def baselines(args) -> dict:
    if not os.path.exists(INTEROP_PY):
        return {"error": "interop venv missing (make interop-setup)"}
    quick = ["--quick"] if args.quick else []
    out = {}
    out["kademlia"] = run_json([INTEROP_PY, str(REPO / "bench/baselines/kademlia_pkg.py"), *quick,
                                "--nodes", str(args.nodes), "--lookups", str(args.lookups), "--cap", "300"], 400)
    # The largest network py-libp2p sets up within the cap: nodes join one
    # at a time until the next join would pass it (or a fixed size if given).
    pylibp2p = [INTEROP_PY, str(REPO / "bench/baselines/pylibp2p_kad.py"), "--cap", str(args.pylibp2p_cap),
                "--lookup-cap", str(args.pylibp2p_lookup_cap), "--lookups", str(min(args.lookups, 50)),
                "--wanted", "1"]
    if args.quick:
        pylibp2p += quick
    elif args.pylibp2p_nodes:
        pylibp2p += ["--nodes", str(args.pylibp2p_nodes)]
    else:
        pylibp2p += ["--grow"]
    out["py-libp2p-kad"] = run_json(pylibp2p, args.pylibp2p_cap + args.pylibp2p_lookup_cap + 120)
    return out


# ------------------------------------------------------------------ checks


def baseline_failure(baselines: dict, name: str, figure: str) -> str:
    """Why a baseline has no ``figure`` (appended to its check's target), or ""."""
    result = baselines.get(name)
    if get(baselines, name, figure) is not None:
        return ""
    if not isinstance(result, dict):
        return f"; baseline not run: {baselines.get('error', 'skipped')}"
    cause = result.get("error") or result.get("errors") or "it reported no figure"
    return f"; baseline failed: {json.dumps(cause)[:300]}"


def versus_baseline(ours: dict, base: dict, name: str, label: str, figure: str) -> dict:
    """Our remote find_providers p50 at the baseline's ``wanted`` against the
    baseline's p50 over lookups it did not answer from its own store; the
    name states ``wanted`` and both node counts."""
    wanted = get(base, name, "wanted") or 1
    mine = get(ours, f"find_providers_wanted{wanted}", "remote", "ms", "p50")
    theirs = get(base, name, figure, "p50")
    return check(
        f"find_providers_p50_vs_{label}_wanted{wanted}_ours_{ours.get('nodes')}_nodes_theirs_{get(base, name, 'nodes')}_nodes",
        mine, "ms",
        "informative: ratio = baseline / ours (> 1: ours faster); both sides' lookups answered from the asking "
        "node's own store excluded" + baseline_failure(base, name, figure),
        theirs, theirs / mine if theirs and mine else None, bool(theirs and mine and mine < theirs))


def build_checks(report: dict) -> list[dict]:
    ours = report.get("hypermesh", {})
    base = report.get("baselines", {})
    n = ours.get("nodes")
    p50 = get(ours, "find_providers_wanted1", "remote", "ms", "p50")
    p99 = get(ours, "find_providers_wanted1", "remote", "ms", "p99")
    converged_p50 = get(ours, "find_providers_wanted20", "remote", "ms", "p50")
    converged_p99 = get(ours, "find_providers_wanted20", "remote", "ms", "p99")
    cached = get(ours, "resolve_service", "cached_ms", "p50")
    services = get(ours, "services", "registered") or 0
    checks = [
        check(f"find_providers_p50_ms_{n}_nodes", p50, "ms", "<= 20 (wanted=1, remote lookups)", met=p50 is not None and p50 <= 20),
        check(f"find_providers_p99_ms_{n}_nodes", p99, "ms", "<= 100 (wanted=1, remote lookups)", met=p99 is not None and p99 <= 100),
        check(f"find_providers_converged_p50_ms_{n}_nodes", converged_p50, "ms", "<= 60 (wanted=20, remote lookups)",
              met=converged_p50 is not None and converged_p50 <= 60),
        check(f"find_providers_converged_p99_ms_{n}_nodes", converged_p99, "ms", "<= 300 (wanted=20, remote lookups)",
              met=converged_p99 is not None and converged_p99 <= 300),
    ]
    for wanted in (1, 20):
        rate = get(ours, f"find_providers_wanted{wanted}", "remote", "success_rate")
        checks.append(check(f"find_providers_success_rate_wanted{wanted}_{n}_nodes", rate, "fraction",
                            ">= 0.995 (all remote lookups asked for; failures and lookups not run count)",
                            met=rate is not None and rate >= 0.995))
    checks.append(check(f"cached_resolve_p50_ms_{services}_services", cached, "ms", "<= 1",
                        met=cached is not None and cached <= 1 and services >= get(ours, "services", "requested")))
    checks.append(versus_baseline(ours, base, "kademlia", "kademlia_pkg_get", "get_ms"))
    checks.append(versus_baseline(ours, base, "py-libp2p-kad", "pylibp2p_kad", "find_providers_ms"))
    setup, kad_setup, py_setup = ours.get("setup_s"), get(base, "kademlia", "setup_s"), get(base, "py-libp2p-kad", "setup_s")
    checks.append(check("setup_s_vs_pylibp2p_kad", setup, "s", "informative: ratio = baseline / ours", py_setup,
                        py_setup / setup if setup and py_setup else None, bool(setup and py_setup and setup < py_setup)))
    checks.append(check("setup_s_vs_kademlia_pkg", setup, "s", "informative: ratio = baseline / ours", kad_setup,
                        kad_setup / setup if setup and kad_setup else None,
                        bool(setup and kad_setup and setup < kad_setup)))
    return checks


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # so that workers are stopped and the temp dir removed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small run for a smoke test")
    parser.add_argument("--nodes", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--lookups", type=int)
    parser.add_argument("--services", type=int)
    parser.add_argument("--resolves", type=int)
    parser.add_argument("--register-concurrency", type=int, default=2, help="register_services calls in flight per worker")
    parser.add_argument("--register-batch", type=int, default=50, help="names per register_services call (1: one by one)")
    parser.add_argument("--setup-cap", type=float, default=300.0)
    parser.add_argument("--provide-cap", type=float, default=180.0)
    parser.add_argument("--lookup-cap", type=float, default=180.0)
    parser.add_argument("--register-cap", type=float, default=1500.0)
    parser.add_argument("--pylibp2p-nodes", type=int, help="fixed py-libp2p network size (default: the largest "
                        "it sets up within --pylibp2p-cap)")
    parser.add_argument("--pylibp2p-cap", type=float, default=300.0, help="seconds py-libp2p may take to set up")
    parser.add_argument("--pylibp2p-lookup-cap", type=float, default=120.0)
    parser.add_argument("--skip-baselines", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep-data", action="store_true", help="keep the nodes' data dirs and worker logs")
    # worker mode (internal)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--index", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker_main(args)
        return
    args.nodes = args.nodes or (12 if args.quick else 200)
    args.workers = max(1, min(args.workers or (2 if args.quick else 4), args.nodes // 2))
    args.lookups = args.lookups or (20 if args.quick else 200)
    args.services = args.services if args.services is not None else (100 if args.quick else 10_000)
    args.resolves = args.resolves or (50 if args.quick else 300)
    if args.quick:
        args.setup_cap, args.provide_cap, args.lookup_cap = 20.0, 15.0, 15.0
        args.register_cap, args.pylibp2p_cap = 15.0, 30.0

    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    report: dict = {"bench": "dht", "quick": args.quick, "machine": machine(),
                    "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    tmp = Path(tempfile.mkdtemp(prefix="hypermesh-dht-bench-"))
    try:
        run_ours(args, tmp, report)
    except Exception as exc:  # noqa: BLE001 - a bug of the bench: reported, and the JSON still printed
        report.setdefault("hypermesh", {}).setdefault("errors", {})["bench"] = f"{type(exc).__name__}: {exc}"
    finally:
        if args.keep_data:
            print(f"[dht bench] data and worker logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    report["loadavg_after_ours"] = [round(x, 2) for x in os.getloadavg()]
    try:
        report["baselines"] = {} if args.skip_baselines else baselines(args)
    except Exception as exc:  # noqa: BLE001
        report["baselines"] = {"error": f"{type(exc).__name__}: {exc}"}
    report["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    report["checks"] = build_checks(report)
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
