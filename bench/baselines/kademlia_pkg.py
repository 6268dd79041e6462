#!/usr/bin/env python
"""The `kademlia` PyPI package (2.2.3, asyncio, UDP, no encryption): N nodes in one process.

Run with the interop venv:
    /work/main/.venv-interop/bin/python bench/baselines/kademlia_pkg.py [--quick]
        [--nodes N] [--lookups L] [--cap 300] [--seed 1]

Every node is a ``kademlia.network.Server`` (ksize 20, alpha 3) on 127.0.0.1
in one asyncio loop. Node 0 is the bootstrap; every other node bootstraps
through it (in joining order, so later nodes see earlier ones), then every
node bootstraps again through node 0 so early nodes learn the late ones.
Then L (setter, getter) pairs are drawn (seeded RNG): the setter sets a fresh
key, a different node gets it. ``Server.get`` answers from the getter's own
store when the set reached it (every node, up to 21 nodes), without a
lookup: such gets are timed apart (``local_get_ms``), so that ``get_ms`` is
like our remote find_providers figures. A get ends at the first value found,
i.e. wanted = 1.

stdout: ONE JSON object
{"impl": "kademlia", "version", "quick", "nodes", "setup_s", "routing_table_size": {min,p50,max},
 "operation": "get", "wanted": 1, "set_ms": {n,p50,p99,mean},
 "get_ms": {n,p50,p99,mean} (successful gets by a node without a local copy),
 "local_get_ms": {...} (successful gets answered from the getter's store), "lookups", "found",
 "found_in_local_store", "success_rate" (over all gets), "remote_success_rate", "errors", "elapsed_s"}
Every phase is bounded by --cap (total); a phase cut short reports what it did.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import statistics
import sys
import time


def summ(xs):
    if not xs:
        return None
    s = sorted(xs)
    return {"n": len(s), "p50": round(statistics.median(s), 3), "p99": round(s[min(len(s) - 1, int(len(s) * 0.99))], 3),
            "mean": round(statistics.fmean(s), 3)}


async def amain(args, out):
    from kademlia.network import Server
    from kademlia.utils import digest

    rng = random.Random(args.seed)
    deadline = time.monotonic() + args.cap
    servers = []
    try:
        t0 = time.perf_counter()
        for _ in range(args.nodes):
            server = Server(ksize=20, alpha=3)
            await server.listen(0, interface="127.0.0.1")
            servers.append(server)
        ports = [s.transport.get_extra_info("sockname")[1] for s in servers]
        boot = [("127.0.0.1", ports[0])]
        for server in servers[1:]:
            await asyncio.wait_for(server.bootstrap(boot), max(1, deadline - time.monotonic()))
        # A second round, so that nodes that joined early learn the late ones.
        await asyncio.wait_for(asyncio.gather(*(s.bootstrap(boot) for s in servers[1:])),
                               max(1, deadline - time.monotonic()))
        out["setup_s"] = round(time.perf_counter() - t0, 3)
        out["nodes"] = len(servers)
        sizes = sorted(sum(len(b) for b in s.protocol.router.buckets) for s in servers)
        out["routing_table_size"] = {"min": sizes[0], "p50": sizes[len(sizes) // 2], "max": sizes[-1]}
        set_ms, get_ms, local_get_ms, found, local, remote = [], [], [], 0, 0, 0
        for j in range(args.lookups):
            if time.monotonic() > deadline:
                out["errors"]["cap"] = f"cap {args.cap}s hit after {j} lookups"
                break
            a, b = rng.sample(range(len(servers)), 2)
            key, value = f"kad-bench-{args.seed}-{j}", f"value-{j}"
            try:
                t = time.perf_counter()
                await asyncio.wait_for(servers[a].set(key, value), 30)
                set_ms.append((time.perf_counter() - t) * 1000)
                is_local = servers[b].storage.get(digest(key)) is not None  # Server.get answers from it first
                remote += not is_local
                t = time.perf_counter()
                got = await asyncio.wait_for(servers[b].get(key), 30)
                dt = (time.perf_counter() - t) * 1000
                if got == value:
                    found += 1
                    local += is_local
                    (local_get_ms if is_local else get_ms).append(dt)
            except Exception as exc:  # noqa: BLE001
                out["errors"].setdefault("lookup", f"{type(exc).__name__}: {exc}")
            out["lookups_done"] = j + 1
        out["found"] = found
        out["found_in_local_store"] = local
        out["success_rate"] = round(found / max(1, out["lookups_done"]), 4)
        out["remote_success_rate"] = round(len(get_ms) / remote, 4) if remote else None
        out["set_ms"] = summ(set_ms)
        out["get_ms"] = summ(get_ms)
        out["local_get_ms"] = summ(local_get_ms)
    except Exception as exc:  # noqa: BLE001
        out["errors"]["fatal"] = f"{type(exc).__name__}: {exc}"
    finally:
        out["nodes"] = len(servers)
        for server in servers:
            server.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--nodes", type=int)
    ap.add_argument("--lookups", type=int)
    ap.add_argument("--cap", type=float, default=300.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    args.nodes = args.nodes or (12 if args.quick else 200)
    args.lookups = args.lookups or (20 if args.quick else 200)
    logging.disable(logging.CRITICAL)
    import importlib.metadata as md

    out = {"impl": "kademlia", "version": md.version("kademlia"), "transport": "udp", "quick": args.quick,
           "nodes_requested": args.nodes, "nodes": 0, "setup_s": None, "routing_table_size": None,
           "operation": "get", "wanted": 1, "set_ms": None, "get_ms": None, "local_get_ms": None, "lookups": args.lookups, "lookups_done": 0, "found": 0,
           "success_rate": None, "errors": {}}
    t0 = time.monotonic()
    try:
        asyncio.run(amain(args, out))
    except BaseException as exc:  # noqa: BLE001 - the report must still be printed, with the cause
        out["errors"]["fatal"] = f"{type(exc).__name__}: {exc}"
    out["elapsed_s"] = round(time.monotonic() - t0, 2)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
