#!/usr/bin/env python
"""py-libp2p 0.8.1 transport baseline (QUIC v1 and TCP/Noise/yamux) on loopback.

Run with the interop venv:
    /work/main/.venv-interop/bin/python bench/baselines/pylibp2p_transport.py [--quick]
        [--transports quic,tcp] [--connects N] [--pings N] [--bulk-mb M]
        [--parallel K] [--time-cap S] [--fix-quic-ipv6]

The listener is a separate process (tests/interop/pylibp2p_peer.py listen); the
dialer runs in this process. stdout carries exactly ONE JSON object (logs go to
stderr). Exit code 0 even when some measurements fail (they are null + reason);
1 only if the harness itself crashed (then the JSON has "error").

Output keys
-----------
{
  "impl": "py-libp2p", "version": "0.8.1", "python": "3.11.x",
  "quick": bool, "elapsed_s": float,
  "params": {"connects", "pings", "bulk_bytes", "parallel_streams", "time_cap_s", "fix_quic_ipv6"},
  "transports": {
    "quic" | "tcp": {
      "ip": "::1" | "127.0.0.1" | null,   # address family the figures below were measured on
                                          # (::1 preferred; falls back to 127.0.0.1)
      "ip_ok": {"::1": bool, "127.0.0.1": bool},   # which loopback families could connect
      "ip_errors": {"::1": "reason", ...},         # only for failed families
      "connect_ms":         {"n","p50","p99","mean","min","max"} | null,
            # full connect, stock py-libp2p: host.connect() + new_stream(/ipfs/ping/1.0.0)
            # (multistream negotiated) + one 32-byte ping; new connection each time
      "connect_nodelay_ms": {...} | null,
            # same, with py-libp2p's 250 ms happy-eyeballs wait patched to 0
            # (swarm._HAPPY_EYEBALLS_DELAY, see docs/INTEROP.md bug 4)
      "ping_rtt_ms":        {"n","p50","p99","mean","min","max"} | null,
            # 32-byte /ipfs/ping/1.0.0 round trips on one open stream
      "bulk_1stream":  {"protocol","bytes","seconds","mb_per_s","complete"} | null,
            # upload over /perf/1.0.0 (u64 header = 0 bytes back, write, close_write,
            # wait for the server's EOF). MB = 1e6 bytes. complete=false when the
            # time cap cut the transfer short (bytes = what was sent).
      "bulk_parallel": {"protocol","streams","bytes","seconds","mb_per_s","complete"} | null,
            # K concurrent perf streams on the same connection, total bytes
      "errors": {"<measurement>": "reason", ...}   # why a figure is null / incomplete
    }
  }
}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "interop"))

import pylibp2p_peer as peer  # noqa: E402  (configures logging to stderr)
from peerctl import PeerError, PyPeer  # noqa: E402

import trio  # noqa: E402

PERF_ID = peer.PERF_ID
PING_ID = peer.PING_ID
CHUNK = 64 * 1024


def fmt_exc(e: BaseException) -> str:
    """Flatten (nested) ExceptionGroups into one readable string."""
    if isinstance(e, BaseExceptionGroup):
        return "; ".join(fmt_exc(x) for x in e.exceptions)
    msg = f"{type(e).__name__}: {e}"
    cause = e.__cause__ or e.__context__
    if cause is not None and cause is not e and len(msg) < 400:
        msg += f" <- {fmt_exc(cause)}"
    return msg


def summarize(xs: list[float]) -> dict[str, Any] | None:
    if not xs:
        return None
    s = sorted(xs)

    def pct(p: float) -> float:
        k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
        return round(s[k], 3)

    return {
        "n": len(s),
        "p50": round(statistics.median(s), 3),
        "p99": pct(99),
        "mean": round(statistics.fmean(s), 3),
        "min": round(s[0], 3),
        "max": round(s[-1], 3),
    }


async def one_ping(stream) -> None:
    payload = os.urandom(32)
    await stream.write(payload)
    got = b""
    while len(got) < 32:
        c = await peer.read_some(stream, 32 - len(got))
        if not c:
            raise RuntimeError("ping stream closed")
        got += c
    if got != payload:
        raise RuntimeError("ping mismatch")


async def measure_connects(host, addr: str, n: int, cap: float, errors: dict, key: str) -> dict | None:
    from libp2p.peer.peerinfo import info_from_p2p_addr
    import multiaddr

    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    samples: list[float] = []
    failures: list[str] = []
    with trio.move_on_after(cap) as cs:
        for _ in range(n + 5):
            if len(samples) >= n or len(failures) >= 5:
                break
            try:
                with trio.fail_after(15):
                    t0 = time.perf_counter()
                    await host.connect(info)
                    s = await host.new_stream(info.peer_id, [PING_ID])
                    await one_ping(s)
                    samples.append((time.perf_counter() - t0) * 1000.0)
                    await s.close()
            except trio.TooSlowError:
                failures.append("single connect exceeded 15 s")
            except Exception as e:
                failures.append(fmt_exc(e))
            with trio.move_on_after(5):
                try:
                    await host.disconnect(info.peer_id)
                except Exception:
                    pass
            # let both sides tear the connection down before the next dial (not timed)
            await trio.sleep(0.05)
    if failures:
        errors[key] = f"{len(failures)} failed connects (first: {failures[0]})"
    if cs.cancelled_caught:
        errors[key] = errors.get(key, "") + f" time cap {cap}s hit after {len(samples)}/{n} connects"
    out = summarize(samples)
    if out is not None:
        out["failures"] = len(failures)
    return out

    return summarize(samples)


async def ensure_connected(host, addr: str):
    from libp2p.peer.peerinfo import info_from_p2p_addr
    import multiaddr

    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    with trio.fail_after(15):
        await host.connect(info)
    return info.peer_id


async def measure_pings(host, pid, n: int, cap: float, errors: dict) -> dict | None:
    samples: list[float] = []
    with trio.move_on_after(cap) as cs:
        try:
            for attempt in range(3):
                # py-libp2p QUIC sometimes EOFs the first stream of a fresh
                # connection (docs/INTEROP.md bug 5): retry on a new connection
                try:
                    s = await host.new_stream(pid, [PING_ID])
                    break
                except Exception:
                    if attempt == 2:
                        raise
                    with trio.move_on_after(5):
                        await host.disconnect(pid)
                    await trio.sleep(0.2)
                    with trio.fail_after(15):
                        await host.connect(host.get_peerstore().peer_info(pid))
            for _ in range(5):  # warm-up
                await one_ping(s)
            for _ in range(n):
                t0 = time.perf_counter()
                await one_ping(s)
                samples.append((time.perf_counter() - t0) * 1000.0)
            await s.close()
        except Exception as e:
            errors["ping_rtt_ms"] = fmt_exc(e)
    if cs.cancelled_caught:
        errors["ping_rtt_ms"] = f"time cap {cap}s hit after {len(samples)}/{n} pings"
    return summarize(samples)


async def perf_upload(host, pid, nbytes: int, deadline: float, progress: list[int]) -> bool:
    """Upload nbytes over /perf/1.0.0 (asking 0 bytes back). Returns completeness."""
    s = await host.new_stream(pid, [PERF_ID])
    buf = bytes(CHUNK)
    await s.write(struct.pack(">Q", 0))
    sent = 0
    complete = True
    while sent < nbytes:
        if time.monotonic() > deadline:
            complete = False
            break
        k = min(CHUNK, nbytes - sent)
        await s.write(buf[:k])
        sent += k
        progress[0] += k
    await s.close_write()
    while True:  # server sends 0 bytes then closes -> EOF
        c = await peer.read_some(s, CHUNK)
        if not c:
            break
    try:
        await s.close()
    except Exception:
        pass
    return complete


async def measure_bulk(host, pid, nbytes: int, streams: int, cap: float, errors: dict, key: str) -> dict | None:
    progress = [0]
    completes: list[bool] = []
    t0 = time.perf_counter()
    # soft deadline for writers, hard cap (+50%) for the whole thing
    deadline = time.monotonic() + cap
    with trio.move_on_after(cap * 1.5 + 5) as cs:
        try:
            async with trio.open_nursery() as n:
                per = nbytes // streams

                async def run_one() -> None:
                    completes.append(await perf_upload(host, pid, per, deadline, progress))

                for _ in range(streams):
                    n.start_soon(run_one)
        except BaseException as e:  # ExceptionGroup from the nursery
            if isinstance(e, (KeyboardInterrupt, SystemExit, trio.Cancelled)):
                raise
            errors[key] = fmt_exc(e)
            return None
    dt = time.perf_counter() - t0
    if cs.cancelled_caught:
        errors[key] = f"hard cap hit; {progress[0]} bytes sent, not acknowledged"
        return None
    complete = len(completes) == streams and all(completes)
    if not complete:
        errors[key] = f"time cap {cap}s hit; reporting the {progress[0]} bytes sent"
    out = {
        "protocol": str(PERF_ID),
        "bytes": progress[0],
        "seconds": round(dt, 4),
        "mb_per_s": round(progress[0] / dt / 1e6, 3) if dt > 0 else None,
        "complete": complete,
    }
    if streams > 1:
        out["streams"] = streams
    return out


async def probe_and_measure(transport: str, args, result: dict) -> None:
    errors: dict[str, str] = {}
    r: dict[str, Any] = {"ip": None, "ip_ok": {}, "ip_errors": {}, "errors": errors}
    result[transport] = r
    g = ["--fix-quic-ipv6"] if args.fix_quic_ipv6 else []
    chosen = None
    for ip in ("::1", "127.0.0.1"):
        try:
            p = PyPeer(transport=transport, ip=ip, global_opts=g, startup_timeout=15)
        except PeerError as e:
            r["ip_ok"][ip] = False
            r["ip_errors"][ip] = f"listener: {e}"
            continue
        host = peer.make_host(transport, None, None)
        try:
            async with host.run(listen_addrs=[]):
                try:
                    with trio.fail_after(args.probe_timeout):
                        pid = await ensure_connected(host, p.addrs[0])
                        s = await host.new_stream(pid, [PING_ID])
                        await one_ping(s)
                        await s.close()
                    r["ip_ok"][ip] = True
                except BaseException as e:
                    if isinstance(e, (KeyboardInterrupt, SystemExit)):
                        raise
                    r["ip_ok"][ip] = False
                    r["ip_errors"][ip] = (
                        f"no connection within {args.probe_timeout}s"
                        if isinstance(e, trio.TooSlowError)
                        else f"{type(e).__name__}: {e}"
                    )
                    continue
                if chosen is not None:
                    continue
                chosen = ip
                r["ip"] = ip
                addr = p.addrs[0]
                with trio.move_on_after(5):
                    await host.disconnect(pid)
                import libp2p.network.swarm as swarm_mod

                r["connect_ms"] = await measure_connects(host, addr, args.connects, args.time_cap, errors, "connect_ms")
                old = swarm_mod._HAPPY_EYEBALLS_DELAY
                swarm_mod._HAPPY_EYEBALLS_DELAY = 0.0
                try:
                    r["connect_nodelay_ms"] = await measure_connects(
                        host, addr, args.connects, args.time_cap, errors, "connect_nodelay_ms"
                    )
                finally:
                    swarm_mod._HAPPY_EYEBALLS_DELAY = old
                try:
                    pid = await ensure_connected(host, addr)
                except BaseException as e:
                    if isinstance(e, (KeyboardInterrupt, SystemExit)):
                        raise
                    errors["connection"] = f"reconnect failed: {type(e).__name__}: {e}"
                    continue
                r["ping_rtt_ms"] = await measure_pings(host, pid, args.pings, args.time_cap, errors)
                r["bulk_1stream"] = await measure_bulk(host, pid, args.bulk_bytes, 1, args.time_cap, errors, "bulk_1stream")
                if args.parallel > 1:
                    r["bulk_parallel"] = await measure_bulk(
                        host, pid, args.bulk_bytes, args.parallel, args.time_cap, errors, "bulk_parallel"
                    )
        finally:
            p.close()
    for k in ("connect_ms", "connect_nodelay_ms", "ping_rtt_ms", "bulk_1stream", "bulk_parallel"):
        if k == "bulk_parallel" and args.parallel <= 1:
            continue
        r.setdefault(k, None)
        if r[k] is None and k not in errors:
            errors[k] = "not measured: no working address family" if chosen is None else "not measured"


async def amain(args) -> dict:
    result: dict[str, Any] = {}
    for t in args.transports:
        with trio.move_on_after(args.total_cap) as cs:
            await probe_and_measure(t, args, result)
        if cs.cancelled_caught:
            result.setdefault(t, {}).setdefault("errors", {})["total"] = f"transport cap {args.total_cap}s hit"
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description="py-libp2p transport baseline (one JSON object on stdout)")
    ap.add_argument("--quick", action="store_true", help="small run (a few seconds per transport)")
    ap.add_argument("--transports", default="quic,tcp")
    ap.add_argument("--connects", type=int)
    ap.add_argument("--pings", type=int)
    ap.add_argument("--bulk-mb", type=float)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--time-cap", type=float, help="per-measurement cap in seconds")
    ap.add_argument("--probe-timeout", type=float, default=6.0, help="per address family reachability probe")
    ap.add_argument("--fix-quic-ipv6", action="store_true", help="apply the IPv6 QUIC monkeypatch to both sides")
    args = ap.parse_args()
    q = args.quick
    args.connects = args.connects or (5 if q else 30)
    args.pings = args.pings or (50 if q else 200)
    args.bulk_bytes = int((args.bulk_mb or (2 if q else 20)) * 1e6)
    args.time_cap = args.time_cap or (10.0 if q else 60.0)
    args.total_cap = args.time_cap * 8 + 30
    args.transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if args.fix_quic_ipv6:
        peer.apply_quic_ipv6_workaround()
    import importlib.metadata as md

    out: dict[str, Any] = {
        "impl": "py-libp2p",
        "version": md.version("libp2p"),
        "python": platform.python_version(),
        "quick": q,
        "params": {
            "connects": args.connects,
            "pings": args.pings,
            "bulk_bytes": args.bulk_bytes,
            "parallel_streams": args.parallel,
            "time_cap_s": args.time_cap,
            "fix_quic_ipv6": args.fix_quic_ipv6,
        },
    }
    t0 = time.monotonic()
    rc = 0
    try:
        out["transports"] = trio.run(amain, args)
    except BaseException as e:  # noqa: BLE001
        out["error"] = fmt_exc(e)
        rc = 1
    out["elapsed_s"] = round(time.monotonic() - t0, 2)
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    os._exit(rc)


if __name__ == "__main__":
    main()
