#!/usr/bin/env python
"""py-libp2p 0.8.1 interop peer for HyperMesh tests.

Run with the interop venv:  /work/main/.venv-interop/bin/python tests/interop/pylibp2p_peer.py

Modes
-----
listen --transport quic|tcp --ip 127.0.0.1|::1 [--kad] [--seed N]
       [--bootstrap MADDR] [--provide CID] [--find-providers CID] [--perf]
    Starts a py-libp2p host (Ed25519 identity; deterministic from --seed)
    listening on port 0 with ping (/ipfs/ping/1.0.0), identify (/ipfs/id/1.0.0),
    perf (/perf/1.0.0), a byte-count sink (/hypermesh/sink/1.0.0) and, with
    --kad, the Kademlia DHT (/ipfs/kad/1.0.0) in SERVER mode.
    stdout line 1 (as soon as listening):
        {"event":"listening","peer_id":...,"addrs":[".../p2p/<id>"],"transport":...,"ip":...}
    then, for the optional flags, in order:
        {"event":"bootstrap","ok":bool,...}
        {"event":"provided","key":...,"ok":bool,...}
        {"event":"providers","key":...,"providers":[{"peer_id","addrs"}],...}
    then serves a JSON-lines command protocol on stdin (one reply line per
    command on stdout, echoing "id" if given):
        {"cmd":"connect","addr":MADDR}                -> {"ok":true,"peer_id","connect_ms"}
        {"cmd":"ping","addr":MADDR,"count":N}          -> {"ok":true,"rtts_ms":[...]}
        {"cmd":"identify","addr":MADDR}                -> {"ok":true,"identify":{...}}
        {"cmd":"add_peer","addr":MADDR}                -> connect + add to kad routing table
        {"cmd":"provide","key":CID}                    -> {"ok":bool}
        {"cmd":"find_providers","key":CID,"count":N}   -> {"ok":true,"providers":[...]}
        {"cmd":"local_providers","key":CID}            -> providers in the local store only
        {"cmd":"find_peer","peer_id":ID}               -> {"ok":true,"addrs":[...]}
        {"cmd":"routing_table"}                        -> {"ok":true,"peers":[...]}
        {"cmd":"peers"}                                -> connected peers
        {"cmd":"info"}                                 -> peer id / addrs
        {"cmd":"quit"}                                 -> {"ok":true} then exit 0
    Errors: {"ok":false,"error":"..."}. Every command has a timeout
    ("timeout" field, default 15 s). Exits when stdin closes, on SIGTERM/SIGINT,
    or when the parent process disappears.

dial --addr MADDR [--count N] [--timeout S]
    Connects (transport chosen from the multiaddr), pings N times, runs
    identify, prints ONE JSON line and exits 0:
        {"peer_id","transport","connect_ms","rtts_ms":[...],
         "identify":{"agent_version","protocol_version","protocols",
                     "listen_addrs","observed_addr","public_key_type"}}
    or {"error": "...", "stage": "connect|ping|identify|timeout"} and exits 1.
    The whole run is bounded by --timeout (default 20 s).

All logging goes to stderr; stdout carries only JSON lines.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import secrets
import signal
import struct
import sys
import time
import traceback
from typing import Any

# Quiet the libraries before importing them.
logging.basicConfig(
    level=logging.WARNING,
    stream=sys.stderr,
    format="%(asctime)s %(name)s %(levelname)s %(message)s",
)

import multiaddr  # noqa: E402
import trio  # noqa: E402

from libp2p import new_host  # noqa: E402
from libp2p.crypto.ed25519 import create_new_key_pair  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402
from libp2p.peer.peerinfo import info_from_p2p_addr  # noqa: E402

PING_ID = TProtocol("/ipfs/ping/1.0.0")
IDENTIFY_ID = TProtocol("/ipfs/id/1.0.0")
PERF_ID = TProtocol("/perf/1.0.0")
SINK_ID = TProtocol("/hypermesh/sink/1.0.0")

_stdout_lock = None  # stdout writes are synchronous; one trio thread only


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def apply_quic_ipv6_workaround() -> None:
    """Opt-in monkeypatch (--fix-quic-ipv6) for the py-libp2p 0.8.1 IPv6 QUIC bug.

    py-libp2p dials with remote_addr=(host, port) (transport/quic/transport.py:314)
    but an AF_INET6 socket's recvfrom() returns (host, port, flowinfo, scope_id);
    aioquic (connection.py ~L787, RFC 9000 s9) drops client packets whose source
    address differs from every known network path, so the handshake never
    completes.  Normalise the client-side address to the path's own form.
    Also fixes listener.py:1021 ``host, port = addr`` (4-tuple on IPv6).
    """
    from aioquic.quic.connection import QuicConnection

    orig = QuicConnection.receive_datagram
    if getattr(orig, "_hm_patched", False):
        return

    def receive_datagram(self, data, addr, now):  # type: ignore[no-untyped-def]
        if self._is_client and len(addr) == 4:
            for path in self._network_paths:
                if tuple(path.addr[:2]) == tuple(addr[:2]):
                    addr = path.addr
                    break
        return orig(self, data, addr, now)

    receive_datagram._hm_patched = True  # type: ignore[attr-defined]
    QuicConnection.receive_datagram = receive_datagram

    from libp2p.transport.quic.listener import QUICListener

    orig_pp = QUICListener._process_packet

    async def _process_packet(self, data, addr):  # type: ignore[no-untyped-def]
        return await orig_pp(self, data, tuple(addr[:2]))

    QUICListener._process_packet = _process_packet


def key_pair_from_seed(seed: int | None):
    if seed is None:
        return create_new_key_pair(secrets.token_bytes(32))
    # deterministic 32-byte Ed25519 seed derived from the integer
    return create_new_key_pair(hashlib.sha256(f"hypermesh-interop-{seed}".encode()).digest())


def transport_of(maddr: str) -> str:
    if "/quic-v1" in maddr or "/quic" in maddr:
        return "quic"
    if "/tcp/" in maddr:
        return "tcp"
    raise ValueError(f"unsupported multiaddr (need tcp or quic-v1): {maddr}")


def listen_maddr(transport: str, ip: str) -> multiaddr.Multiaddr:
    fam = "ip6" if ":" in ip else "ip4"
    if transport == "quic":
        return multiaddr.Multiaddr(f"/{fam}/{ip}/udp/0/quic-v1")
    if transport == "tcp":
        return multiaddr.Multiaddr(f"/{fam}/{ip}/tcp/0")
    raise ValueError(f"unknown transport {transport}")


def make_host(transport: str, seed: int | None, listen: list[multiaddr.Multiaddr] | None):
    kp = key_pair_from_seed(seed)
    if transport == "quic":
        host = new_host(key_pair=kp, enable_quic=True, listen_addrs=listen, enable_tcp=False)
    else:
        host = new_host(key_pair=kp, listen_addrs=listen)
    return host


def full_addrs(host) -> list[str]:
    pid = host.get_id().to_string()
    out = []
    for a in host.get_addrs():
        s = str(a)
        if "/p2p/" not in s:
            s = f"{s}/p2p/{pid}"
        out.append(s)
    return out


def decode_maddr(b: bytes) -> str:
    try:
        return str(multiaddr.Multiaddr(b))
    except Exception:
        return "0x" + b.hex()


# --------------------------------------------------------------------------
# protocol helpers (used by both modes)
# --------------------------------------------------------------------------


async def read_some(stream, n: int) -> bytes:
    """stream.read() that returns b"" at EOF (py-libp2p raises StreamEOF instead)."""
    try:
        return await stream.read(n)
    except EOFError:
        return b""


async def do_connect(host, addr: str) -> tuple[ID, float]:
    info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
    t0 = time.perf_counter()
    await host.connect(info)
    return info.peer_id, (time.perf_counter() - t0) * 1000.0


async def do_ping(host, peer_id: ID, count: int) -> list[float]:
    stream = await host.new_stream(peer_id, [PING_ID])
    rtts: list[float] = []
    try:
        for _ in range(count):
            payload = os.urandom(32)
            t0 = time.perf_counter()
            await stream.write(payload)
            got = b""
            while len(got) < 32:
                chunk = await read_some(stream, 32 - len(got))
                if not chunk:
                    raise RuntimeError(f"ping stream closed after {len(got)} bytes")
                got += chunk
            rtts.append((time.perf_counter() - t0) * 1000.0)
            if got != payload:
                raise RuntimeError("ping payload mismatch")
    finally:
        try:
            await stream.close()
        except Exception:
            pass
    return rtts


def _read_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    shift = 0
    val = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        val |= (b & 0x7F) << shift
        if not b & 0x80:
            return val, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


async def do_identify(host, peer_id: ID) -> dict[str, Any]:
    from libp2p.crypto.pb import crypto_pb2
    from libp2p.identity.identify.pb.identify_pb2 import Identify

    stream = await host.new_stream(peer_id, [IDENTIFY_ID])
    data = b""
    try:
        # The responder writes one (or more) varint-delimited messages, then closes.
        while True:
            chunk = await read_some(stream, 65536)
            if not chunk:
                break
            data += chunk
            if len(data) > 4 * 1024 * 1024:
                raise RuntimeError("identify response too large")
            # stop early if we already have a complete delimited message
            try:
                ln, p = _read_uvarint(data, 0)
                if p + ln == len(data):
                    break
            except ValueError:
                pass
    finally:
        try:
            await stream.close()
        except Exception:
            pass
    if not data:
        raise RuntimeError("empty identify response")
    msg = Identify()
    pos = 0
    n = 0
    while pos < len(data):
        ln, pos = _read_uvarint(data, pos)
        if pos + ln > len(data):
            raise RuntimeError(f"truncated identify message ({len(data)} bytes)")
        part = Identify()
        part.ParseFromString(data[pos : pos + ln])
        msg.MergeFrom(part)
        pos += ln
        n += 1
    key_type = None
    if msg.HasField("public_key"):
        try:
            pk = crypto_pb2.PublicKey()
            pk.ParseFromString(msg.public_key)
            key_type = crypto_pb2.KeyType.Name(pk.key_type)
        except Exception:
            key_type = "unparseable"
    return {
        "agent_version": msg.agent_version,
        "protocol_version": msg.protocol_version,
        "protocols": list(msg.protocols),
        "listen_addrs": [decode_maddr(a) for a in msg.listen_addrs],
        "observed_addr": decode_maddr(msg.observed_addr) if msg.observed_addr else None,
        "public_key_type": key_type,
        "messages": n,
        "has_signed_peer_record": bool(msg.signedPeerRecord) if hasattr(msg, "signedPeerRecord") else False,
    }


async def sink_handler(stream) -> None:
    """Reads everything until EOF, replies with the byte count as u64 BE."""
    total = 0
    try:
        while True:
            chunk = await read_some(stream, 1 << 20)
            if not chunk:
                break
            total += len(chunk)
        await stream.write(struct.pack(">Q", total))
        await stream.close()
    except Exception:
        try:
            await stream.reset()
        except Exception:
            pass


# --------------------------------------------------------------------------
# listen mode
# --------------------------------------------------------------------------


def _peerinfo_json(pi) -> dict[str, Any]:
    return {"peer_id": pi.peer_id.to_string(), "addrs": [str(a) for a in pi.addrs]}


class Listener:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.host = None
        self.dht = None

    async def run(self) -> int:
        args = self.args
        try:
            self.host = make_host(args.transport, args.seed, [listen_maddr(args.transport, args.ip)])
        except Exception as e:
            emit({"event": "error", "error": f"host creation failed: {e!r}"})
            return 1
        host = self.host
        self.ready = False
        self.rc = 1
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._signals, nursery.cancel_scope)
                nursery.start_soon(self._orphan_watch, nursery.cancel_scope)
                nursery.start_soon(self._startup_watch, nursery.cancel_scope)
                async with host.run(listen_addrs=[listen_maddr(args.transport, args.ip)]):
                    if args.kad:
                        from libp2p.kad_dht.kad_dht import DHTMode, KadDHT
                        from libp2p.tools.anyio_service import background_trio_service

                        self.dht = KadDHT(host, DHTMode.SERVER)
                        async with background_trio_service(self.dht):
                            self.rc = await self._serve()
                    else:
                        self.rc = await self._serve()
                nursery.cancel_scope.cancel()
        except BaseException as e:
            if isinstance(e, KeyboardInterrupt):
                return 130
            if not self.ready:
                emit({"event": "error", "error": f"listen failed: {type(e).__name__}: {e}"})
                return 1
            logging.warning("listener shutdown error: %r", e)
        return self.rc

    async def _startup_watch(self, scope: trio.CancelScope) -> None:
        await trio.sleep(self.args.startup_timeout)
        if not self.ready:
            emit({"event": "error", "error": f"listen did not come up within {self.args.startup_timeout}s"})
            scope.cancel()

    async def _signals(self, scope: trio.CancelScope) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as sigs:
            async for _ in sigs:
                scope.cancel()
                return

    async def _orphan_watch(self, scope: trio.CancelScope) -> None:
        ppid = os.getppid()
        while True:
            await trio.sleep(1)
            if os.getppid() != ppid:
                scope.cancel()
                return

    async def _serve(self) -> int:
        args = self.args
        host = self.host
        host.set_stream_handler(SINK_ID, sink_handler)
        try:
            from libp2p.perf import PerfService

            self.perf = PerfService(host)
            await self.perf.start()
        except Exception as e:  # pragma: no cover
            logging.warning("perf service unavailable: %r", e)
        self.ready = True
        emit(
            {
                "event": "listening",
                "peer_id": host.get_id().to_string(),
                "addrs": full_addrs(host),
                "transport": args.transport,
                "ip": args.ip,
                "kad": bool(args.kad),
            }
        )
        if args.bootstrap:
            emit({"event": "bootstrap", **await self._guard(self._add_peer, {"addr": args.bootstrap})})
        if args.provide:
            emit({"event": "provided", "key": args.provide, **await self._guard(self._provide, {"key": args.provide})})
        if args.find_providers:
            emit(
                {
                    "event": "providers",
                    "key": args.find_providers,
                    **await self._guard(self._find_providers, {"key": args.find_providers}),
                }
            )
        return await self._stdin_loop()

    async def _stdin_loop(self) -> int:
        while True:
            line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
            if not line:
                return 0  # stdin closed
            line = line.strip()
            if not line:
                continue
            try:
                req = json.loads(line)
                if not isinstance(req, dict):
                    raise ValueError("command must be a JSON object")
            except Exception as e:
                emit({"ok": False, "error": f"bad command line: {e}"})
                continue
            cmd = req.get("cmd")
            handler = {
                "connect": self._connect,
                "ping": self._ping,
                "identify": self._identify,
                "add_peer": self._add_peer,
                "provide": self._provide,
                "find_providers": self._find_providers,
                "local_providers": self._local_providers,
                "find_peer": self._find_peer,
                "routing_table": self._routing_table,
                "peers": self._peers,
                "info": self._info,
            }.get(cmd)
            if cmd == "quit":
                emit({"ok": True, "cmd": "quit", **({"id": req["id"]} if "id" in req else {})})
                return 0
            if handler is None:
                resp = {"ok": False, "error": f"unknown cmd {cmd!r}"}
            else:
                resp = await self._guard(handler, req)
            resp["cmd"] = cmd
            if "id" in req:
                resp["id"] = req["id"]
            emit(resp)

    async def _guard(self, fn, req: dict[str, Any]) -> dict[str, Any]:
        timeout = float(req.get("timeout", self.args.cmd_timeout))
        try:
            with trio.fail_after(timeout):
                return {"ok": True, **(await fn(req))}
        except trio.TooSlowError:
            return {"ok": False, "error": f"timeout after {timeout}s"}
        except Exception as e:
            logging.debug("command failed", exc_info=True)
            return {"ok": False, "error": f"{type(e).__name__}: {e}"}

    def _need_dht(self):
        if self.dht is None:
            raise RuntimeError("kad not enabled (start with --kad)")
        return self.dht

    async def _connect(self, req):
        pid, ms = await do_connect(self.host, req["addr"])
        return {"peer_id": pid.to_string(), "connect_ms": round(ms, 3)}

    async def _peer_for(self, req) -> ID:
        if "addr" in req:
            pid, _ = await do_connect(self.host, req["addr"])
            return pid
        return ID.from_base58(req["peer_id"])

    async def _ping(self, req):
        pid = await self._peer_for(req)
        rtts = await do_ping(self.host, pid, int(req.get("count", 1)))
        return {"peer_id": pid.to_string(), "rtts_ms": [round(r, 3) for r in rtts]}

    async def _identify(self, req):
        pid = await self._peer_for(req)
        return {"peer_id": pid.to_string(), "identify": await do_identify(self.host, pid)}

    async def _add_peer(self, req):
        pid, ms = await do_connect(self.host, req["addr"])
        info = info_from_p2p_addr(multiaddr.Multiaddr(req["addr"]))
        self.host.get_peerstore().add_addrs(pid, info.addrs, 3600)
        added = None
        if self.dht is not None:
            added = await self.dht.add_peer(pid, skip_server_mode_check=True)
        return {"peer_id": pid.to_string(), "connect_ms": round(ms, 3), "added_to_routing_table": added}

    async def _provide(self, req):
        ok = await self._need_dht().provide(req["key"])
        if not ok:
            raise RuntimeError("provide() returned False (no peer accepted ADD_PROVIDER)")
        return {"key": req["key"]}

    async def _find_providers(self, req):
        provs = await self._need_dht().find_providers(req["key"], int(req.get("count", 20)))
        return {"key": req["key"], "providers": [_peerinfo_json(p) for p in provs]}

    async def _local_providers(self, req):
        from libp2p.kad_dht.kad_dht import _encode_key

        provs = self._need_dht().provider_store.get_providers(_encode_key(req["key"]))
        return {"key": req["key"], "providers": [_peerinfo_json(p) for p in provs]}

    async def _find_peer(self, req):
        pi = await self._need_dht().find_peer(ID.from_base58(req["peer_id"]))
        return {"found": pi is not None, **(_peerinfo_json(pi) if pi else {})}

    async def _routing_table(self, req):
        rt = self._need_dht().routing_table
        return {"peers": [p.to_string() for p in rt.get_peer_ids()]}

    async def _peers(self, req):
        return {"peers": [p.to_string() for p in self.host.get_connected_peers()]}

    async def _info(self, req):
        return {"peer_id": self.host.get_id().to_string(), "addrs": full_addrs(self.host)}


# --------------------------------------------------------------------------
# dial mode
# --------------------------------------------------------------------------


async def dial_main(args: argparse.Namespace) -> int:
    result: dict[str, Any] = {}
    stage = "setup"
    try:
        transport = transport_of(args.addr)
        host = make_host(transport, args.seed, None)
        with trio.fail_after(args.timeout):
            async with host.run(listen_addrs=[]):
                stage = "connect"
                pid, ms = await do_connect(host, args.addr)
                result = {"peer_id": pid.to_string(), "transport": transport, "connect_ms": round(ms, 3)}
                stage = "ping"
                rtts = await do_ping(host, pid, args.count)
                result["rtts_ms"] = [round(r, 3) for r in rtts]
                stage = "identify"
                result["identify"] = await do_identify(host, pid)
                stage = "close"
                with trio.move_on_after(2):
                    await host.disconnect(pid)
    except trio.TooSlowError:
        if stage == "close":
            emit(result)
            return 0
        emit({"error": f"timeout after {args.timeout}s during {stage}", "stage": stage, **result})
        return 1
    except BaseException as e:  # ExceptionGroup etc.
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        emit({"error": f"{type(e).__name__}: {e}", "stage": stage, **result})
        if args.verbose:
            traceback.print_exc()
        return 1
    emit(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--log-level", default="WARNING")
    sub = p.add_subparsers(dest="mode", required=True)
    lp = sub.add_parser("listen")
    lp.add_argument("--transport", choices=["quic", "tcp"], default="quic")
    lp.add_argument("--ip", default="127.0.0.1")
    lp.add_argument("--kad", action="store_true")
    lp.add_argument("--seed", type=int, default=None)
    lp.add_argument("--bootstrap", default=None, help="multiaddr to connect to (and add to the kad routing table)")
    lp.add_argument("--provide", default=None, metavar="CID")
    lp.add_argument("--find-providers", default=None, metavar="CID")
    lp.add_argument("--cmd-timeout", type=float, default=15.0)
    lp.add_argument("--startup-timeout", type=float, default=10.0)
    dp = sub.add_parser("dial")
    dp.add_argument("--addr", required=True)
    dp.add_argument("--count", type=int, default=3)
    dp.add_argument("--seed", type=int, default=None)
    dp.add_argument("--timeout", type=float, default=20.0)
    dp.add_argument("--verbose", action="store_true")
    p.add_argument("--fix-quic-ipv6", action="store_true", help="apply a monkeypatch for py-libp2p's IPv6 QUIC bug (see docs/INTEROP.md)")
    args = p.parse_args(argv)
    if args.fix_quic_ipv6:
        apply_quic_ipv6_workaround()
    logging.getLogger().setLevel(args.log_level.upper())
    for name in ("libp2p", "multiaddr", "aioquic", "async_service"):
        logging.getLogger(name).setLevel(max(logging.getLogger().level, logging.WARNING) if args.log_level.upper() != "DEBUG" else logging.DEBUG)
    if args.mode == "listen":
        if (args.provide or args.find_providers) and not args.kad:
            p.error("--provide/--find-providers need --kad")
        rc = trio.run(Listener(args).run)
    else:
        rc = trio.run(dial_main, args)
    sys.stdout.flush()
    # py-libp2p may leave non-daemon threads (e.g. resolver pools); don't wait for them
    os._exit(rc)


if __name__ == "__main__":
    sys.exit(main())
