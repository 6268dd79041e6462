#!/usr/bin/env python
"""py-libp2p 0.8.1 Kademlia DHT baseline: N nodes in one process on 127.0.0.1.

Run with the interop venv:
    /work/main/.venv-interop/bin/python bench/baselines/pylibp2p_kad.py [--quick]
        [--nodes N | --grow] [--lookups L] [--transport tcp|quic] [--cap 300] [--lookup-cap 120]

Every node is a py-libp2p host with KadDHT in SERVER mode. Node 0 is the
bootstrap; every other node connects to it and adds it to its routing table,
then refreshes its routing table (a FIND_NODE walk). With --nodes all join at
once; with --grow they join one after another until the next join would pass
--cap, which gives the largest network py-libp2p sets up within it. Then L (provider, seeker)
pairs are drawn (seeded RNG): the provider announces a fresh CID, the seeker
(a different node) runs find_providers(cid, count=--wanted) for it: wanted 1
(default) ends at the first provider, 20 (py-libp2p's default) asks every
peer it reaches, as our wanted=20 does. A seeker that already holds the
provider record answers without a lookup: those lookups are timed apart.

stdout: ONE JSON object
{
  "impl": "py-libp2p-kad", "version": "0.8.1", "transport": "tcp", "quick": bool,
  "nodes": N,                      # nodes actually started
  "setup_s": float | null,         # start all hosts + connect to bootstrap + refresh
  "join_s": {"first","last"},      # with --grow: seconds the first and the last join took
  "routing_table_size": {"min","p50","max"} | null,
  "provide_ms":        {"n","p50","p99","mean"} | null,
  "wanted": int,                   # find_providers' count
  "find_providers_ms": {"n","p50","p99","mean"} | null,   # successful lookups by a seeker
                                                           # without a local record only
  "local_find_providers_ms": {...} | null,                  # those answered from its own store
  "lookups": L, "found": int,      # lookups that returned the provider
  "found_in_local_store": int,     # of those, answered from the seeker's own store
                                   # (provide() sends ADD_PROVIDER to the k=20 closest
                                   # nodes, so with N <= 21 every lookup is local)
  "errors": {...}, "elapsed_s": float
}
Setup is bounded by --cap (default 300 s), lookups by --lookup-cap; a phase cut short reports what it did.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "interop"))

import pylibp2p_peer as peer  # noqa: E402
from peerctl import cid_for  # noqa: E402

import multiaddr  # noqa: E402
import trio  # noqa: E402


def summ(xs: list[float]) -> dict[str, Any] | None:
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(0.99 * len(s) + 0.5)) - 1))
    return {"n": len(s), "p50": round(statistics.median(s), 2), "p99": round(s[k], 2), "mean": round(statistics.fmean(s), 2)}


def fmt_exc(e: BaseException) -> str:
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(fmt_exc(x) for x in e.exceptions)
    return f"{type(e).__name__}: {e}"


async def amain(args, out: dict) -> None:
    from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
    from libp2p.peer.peerinfo import info_from_p2p_addr
    from libp2p.tools.anyio_service import background_trio_service

    errors: dict[str, str] = out["errors"]
    rng = random.Random(args.seed)
    hosts: list = []
    dhts: list = []
    with trio.move_on_after(args.cap + args.lookup_cap) as cap_scope:
        async with contextlib.AsyncExitStack() as stack:
            t0 = time.perf_counter()

            async def start_node(i: int) -> None:
                h = peer.make_host(args.transport, 10_000 + i, [peer.listen_maddr(args.transport, "127.0.0.1")])
                await stack.enter_async_context(h.run(listen_addrs=[peer.listen_maddr(args.transport, "127.0.0.1")]))
                d = KadDHT(h, DHTMode.SERVER)
                await stack.enter_async_context(background_trio_service(d))
                hosts.append(h)
                dhts.append(d)

            async def join(i: int, binfo) -> None:
                h, d = hosts[i], dhts[i]
                with trio.move_on_after(30):
                    h.get_peerstore().add_addrs(binfo.peer_id, binfo.addrs, 3600)
                    await h.connect(binfo)
                    await d.add_peer(binfo.peer_id, skip_server_mode_check=True)
                    # the bootstrap learns about the joiner too
                    await dhts[0].add_peer(h.get_id(), skip_server_mode_check=True)

            async def refresh(i: int) -> None:
                with trio.move_on_after(30):
                    await dhts[i].refresh_routing_table()

            try:
                await start_node(0)
                binfo = info_from_p2p_addr(multiaddr.Multiaddr(peer.full_addrs(hosts[0])[0]))
                if args.grow:
                    # One node at a time, each joining the network the earlier
                    # ones built; stop when the next join would pass the cap.
                    # (No cancel scope around this loop: the hosts' nurseries
                    # live in the outer exit stack. Each join is bounded itself.)
                    join_s: list[float] = []
                    while len(hosts) < args.max_nodes:
                        began = time.perf_counter()
                        if began - t0 + (join_s[-1] if join_s else 0.0) > args.cap:
                            break
                        await start_node(len(hosts))
                        await join(len(hosts) - 1, binfo)
                        await refresh(len(hosts) - 1)
                        join_s.append(time.perf_counter() - began)
                    out["join_s"] = {"first": round(join_s[0], 3) if join_s else None,
                                     "last": round(join_s[-1], 3) if join_s else None}
                else:
                    for i in range(1, args.nodes):
                        await start_node(i)
                    async with trio.open_nursery() as n:
                        for i in range(1, len(hosts)):
                            n.start_soon(join, i, binfo)
                    async with trio.open_nursery() as n:
                        for i in range(1, len(hosts)):
                            n.start_soon(refresh, i)
                out["setup_s"] = round(time.perf_counter() - t0, 3)
            except BaseException as e:
                if isinstance(e, (KeyboardInterrupt, trio.Cancelled)):
                    raise
                errors["setup"] = fmt_exc(e)
            out["nodes"] = len(hosts)
            sizes = sorted(d.get_routing_table_size() for d in dhts)
            if sizes:
                out["routing_table_size"] = {"min": sizes[0], "p50": sizes[len(sizes) // 2], "max": sizes[-1]}
            if len(hosts) < 2 or "setup" in errors:
                return
            lookups_end = time.perf_counter() + args.lookup_cap
            provide_ms: list[float] = []
            find_ms: list[float] = []
            local_find_ms: list[float] = []
            found = 0
            local_hits = 0
            for j in range(args.lookups):
                if time.perf_counter() > lookups_end:
                    errors["lookup_cap"] = f"lookup cap {args.lookup_cap}s hit after {j} lookups"
                    break
                a, b = rng.sample(range(len(hosts)), 2)
                key = cid_for(f"kad-bench-{args.seed}-{j}".encode())
                try:
                    with trio.fail_after(30):
                        t = time.perf_counter()
                        await dhts[a].provide(key)
                        provide_ms.append((time.perf_counter() - t) * 1000)
                    await trio.sleep(0.05)  # ADD_PROVIDER is fire-and-forget
                    from libp2p.kad_dht.kad_dht import _encode_key

                    # The seeker may already have got the ADD_PROVIDER itself.
                    is_local = bool(dhts[b].provider_store.get_providers(_encode_key(key)))
                    with trio.fail_after(30):
                        t = time.perf_counter()
                        provs = await dhts[b].find_providers(key, args.wanted)
                        dt = (time.perf_counter() - t) * 1000
                    if any(p.peer_id == hosts[a].get_id() for p in provs):
                        found += 1
                        local_hits += is_local
                        (local_find_ms if is_local else find_ms).append(dt)
                except BaseException as e:
                    if isinstance(e, (KeyboardInterrupt, trio.Cancelled)):
                        raise
                    errors.setdefault("lookup", fmt_exc(e))
                out["lookups_done"] = j + 1
                out["found"] = found
                out["found_in_local_store"] = local_hits
                out["provide_ms"] = summ(provide_ms)
                out["find_providers_ms"] = summ(find_ms)
                out["local_find_providers_ms"] = summ(local_find_ms)
    if cap_scope.cancelled_caught:
        errors["cap"] = f"cap {args.cap + args.lookup_cap}s hit"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--nodes", type=int)
    ap.add_argument("--lookups", type=int)
    ap.add_argument("--transport", choices=["tcp", "quic"], default="tcp")
    ap.add_argument("--cap", type=float, default=300.0, help="seconds for setting up the network")
    ap.add_argument("--lookup-cap", type=float, default=120.0, help="seconds for the lookups")
    ap.add_argument("--grow", action="store_true",
                    help="join nodes one at a time until the next join would pass --cap (the largest network "
                         "set up within it); --nodes is then ignored")
    ap.add_argument("--max-nodes", type=int, default=1000, help="with --grow: stop here")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--wanted", type=int, default=1, help="find_providers' count: 1 = time to the first provider")
    args = ap.parse_args()
    args.nodes = args.nodes or (8 if args.quick else 30)
    args.lookups = args.lookups or (10 if args.quick else 50)
    import importlib.metadata as md

    out: dict[str, Any] = {
        "impl": "py-libp2p-kad",
        "version": md.version("libp2p"),
        "transport": args.transport,
        "quick": args.quick,
        "nodes_requested": args.nodes,
        "nodes": 0,
        "setup_s": None,
        "routing_table_size": None,
        "provide_ms": None,
        "wanted": args.wanted,
        "find_providers_ms": None,
        "local_find_providers_ms": None,
        "lookups": args.lookups,
        "lookups_done": 0,
        "found": 0,
        "errors": {},
    }
    t0 = time.monotonic()
    rc = 0

    def watchdog() -> None:  # last resort if py-libp2p teardown hangs
        out["errors"]["watchdog"] = "teardown hung; forced exit"
        out["elapsed_s"] = round(time.monotonic() - t0, 2)
        sys.stdout.write(json.dumps(out) + "\n")
        sys.stdout.flush()
        os._exit(2)

    import threading

    wd = threading.Timer(args.cap + args.lookup_cap + 60, watchdog)
    wd.daemon = True
    wd.start()
    try:
        trio.run(amain, args, out)
    except BaseException as e:  # noqa: BLE001
        out["errors"]["fatal"] = fmt_exc(e)
        rc = 1
    wd.cancel()
    out["elapsed_s"] = round(time.monotonic() - t0, 2)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(rc)


if __name__ == "__main__":
    main()
