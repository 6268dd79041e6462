#!/usr/bin/env python
"""Plain trio TCP on loopback: the "Python ceiling" for HyperMesh transport figures.

Run with OUR venv:
    /work/main/.venv/bin/python bench/baselines/trio_tcp.py [--quick] [--ip ::1]
        [--connects N] [--pings N] [--bulk-mb M] [--time-cap S]

The server runs in a separate process (this script with --serve). stdout: ONE
JSON object (exit 0; a failed measurement is null with a reason in "errors"):

{
  "impl": "trio-tcp", "trio": "0.35.0", "python": "3.11.x", "ip": "::1",
  "quick": bool, "elapsed_s": float,
  "params": {"connects", "pings", "bulk_bytes", "time_cap_s"},
  "connect_ms":     {"n","p50","p99","mean","min","max"} | null,  # TCP connect only
  "connect_rtt_ms": {...} | null,   # connect + first 32-byte request/response (comparable
                                    # to libp2p "dial + first negotiated stream")
  "ping_rtt_ms":    {...} | null,   # 32-byte ping-pong on one open connection
  "bulk_1stream":   {"bytes","seconds","mb_per_s","complete"} | null,
                                    # write N bytes, shut down write side, server replies
                                    # with the u64 byte count; MB = 1e6 bytes
  "errors": {"<measurement>": "reason"}
}
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import struct
import subprocess
import sys
import time
from typing import Any

import trio

CHUNK = 64 * 1024


# ---------------------------------------------------------------- server ---


async def _recv_exactly(stream: trio.SocketStream, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        c = await stream.receive_some(n - len(buf))
        if not c:
            raise EOFError
        buf += c
    return buf


async def _handle(stream: trio.SocketStream) -> None:
    try:
        mode = await _recv_exactly(stream, 1)
        if mode == b"P":  # echo 32-byte frames until EOF
            while True:
                try:
                    frame = await _recv_exactly(stream, 32)
                except EOFError:
                    break
                await stream.send_all(frame)
        elif mode == b"B":  # sink: count until EOF, reply u64 BE
            total = 0
            while True:
                c = await stream.receive_some(1 << 20)
                if not c:
                    break
                total += len(c)
            await stream.send_all(struct.pack(">Q", total))
    except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


async def serve(ip: str) -> None:
    listeners = await trio.open_tcp_listeners(0, host=ip)
    port = listeners[0].socket.getsockname()[1]
    sys.stdout.write(json.dumps({"port": port}) + "\n")
    sys.stdout.flush()
    async with trio.open_nursery() as n:
        n.start_soon(trio.serve_listeners, _handle, listeners)
        # exit when the parent closes our stdin
        await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
        n.cancel_scope.cancel()


# ---------------------------------------------------------------- client ---


def summarize(xs: list[float]) -> dict[str, Any] | None:
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(0.99 * len(s) + 0.5)) - 1))
    return {
        "n": len(s),
        "p50": round(statistics.median(s), 4),
        "p99": round(s[k], 4),
        "mean": round(statistics.fmean(s), 4),
        "min": round(s[0], 4),
        "max": round(s[-1], 4),
    }


async def client(args, port: int, out: dict, errors: dict) -> None:
    ip = args.ip
    # connects
    c_only: list[float] = []
    c_rtt: list[float] = []
    with trio.move_on_after(args.time_cap) as cs:
        try:
            for _ in range(args.connects):
                t0 = time.perf_counter()
                s = await trio.open_tcp_stream(ip, port)
                t1 = time.perf_counter()
                payload = os.urandom(32)
                await s.send_all(b"P" + payload)
                await _recv_exactly(s, 32)
                t2 = time.perf_counter()
                c_only.append((t1 - t0) * 1000)
                c_rtt.append((t2 - t0) * 1000)
                await s.aclose()
        except Exception as e:
            errors["connect_ms"] = f"{type(e).__name__}: {e}"
    if cs.cancelled_caught:
        errors["connect_ms"] = f"time cap {args.time_cap}s hit after {len(c_only)} connects"
    out["connect_ms"] = summarize(c_only)
    out["connect_rtt_ms"] = summarize(c_rtt)

    # ping-pong
    rtts: list[float] = []
    with trio.move_on_after(args.time_cap) as cs:
        try:
            s = await trio.open_tcp_stream(ip, port)
            await s.send_all(b"P")
            for i in range(args.pings + 5):
                payload = os.urandom(32)
                t0 = time.perf_counter()
                await s.send_all(payload)
                got = await _recv_exactly(s, 32)
                if i >= 5:
                    rtts.append((time.perf_counter() - t0) * 1000)
                if got != payload:
                    raise RuntimeError("echo mismatch")
            await s.aclose()
        except Exception as e:
            errors["ping_rtt_ms"] = f"{type(e).__name__}: {e}"
    if cs.cancelled_caught:
        errors["ping_rtt_ms"] = f"time cap {args.time_cap}s hit after {len(rtts)} pings"
    out["ping_rtt_ms"] = summarize(rtts)

    # bulk
    sent = 0
    complete = True
    out["bulk_1stream"] = None
    with trio.move_on_after(args.time_cap * 1.5 + 5) as cs:
        try:
            buf = bytes(CHUNK)
            deadline = time.monotonic() + args.time_cap
            t0 = time.perf_counter()
            s = await trio.open_tcp_stream(ip, port)
            await s.send_all(b"B")
            while sent < args.bulk_bytes:
                if time.monotonic() > deadline:
                    complete = False
                    break
                k = min(CHUNK, args.bulk_bytes - sent)
                await s.send_all(buf[:k])
                sent += k
            await s.send_eof()
            (count,) = struct.unpack(">Q", await _recv_exactly(s, 8))
            dt = time.perf_counter() - t0
            await s.aclose()
            if count != sent:
                errors["bulk_1stream"] = f"server counted {count} bytes, sent {sent}"
            if not complete:
                errors["bulk_1stream"] = f"time cap {args.time_cap}s hit; reporting the {sent} bytes sent"
            out["bulk_1stream"] = {
                "bytes": sent,
                "seconds": round(dt, 4),
                "mb_per_s": round(sent / dt / 1e6, 2),
                "complete": complete,
            }
        except Exception as e:
            errors["bulk_1stream"] = f"{type(e).__name__}: {e}"
    if cs.cancelled_caught:
        errors["bulk_1stream"] = "hard cap hit"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ip", default="::1")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--connects", type=int)
    ap.add_argument("--pings", type=int)
    ap.add_argument("--bulk-mb", type=float)
    ap.add_argument("--time-cap", type=float)
    args = ap.parse_args()
    if args.serve:
        trio.run(serve, args.ip)
        return 0
    q = args.quick
    args.connects = args.connects or (20 if q else 200)
    args.pings = args.pings or (200 if q else 2000)
    args.bulk_bytes = int((args.bulk_mb or (20 if q else 200)) * 1e6)
    args.time_cap = args.time_cap or (5.0 if q else 30.0)
    out: dict[str, Any] = {
        "impl": "trio-tcp",
        "trio": trio.__version__,
        "python": platform.python_version(),
        "ip": args.ip,
        "quick": q,
        "params": {
            "connects": args.connects,
            "pings": args.pings,
            "bulk_bytes": args.bulk_bytes,
            "time_cap_s": args.time_cap,
        },
    }
    errors: dict[str, str] = {}
    t_start = time.monotonic()
    srv = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), "--serve", "--ip", args.ip],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        import select

        r, _, _ = select.select([srv.stdout], [], [], 10)
        line = srv.stdout.readline() if r else ""  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"server did not start on [{args.ip}] (rc={srv.poll()})")
        port = json.loads(line)["port"]
        trio.run(client, args, port, out, errors)
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        try:
            srv.stdin.close()  # type: ignore[union-attr]
            srv.wait(timeout=3)
        except Exception:
            srv.kill()
            srv.wait()
    for k in ("connect_ms", "connect_rtt_ms", "ping_rtt_ms", "bulk_1stream"):
        out.setdefault(k, None)
    out["errors"] = errors
    out["elapsed_s"] = round(time.monotonic() - t_start, 2)
    print(json.dumps(out))
    return 0 if "error" not in out else 1


if __name__ == "__main__":
    sys.exit(main())
