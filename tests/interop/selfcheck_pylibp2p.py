"""py-libp2p against itself: checks that pylibp2p_peer.py works (no HyperMesh code).

    python tests/interop/selfcheck_pylibp2p.py [--quick] [--with-fix]

(any python >= 3.10; it only spawns the interop venv's python). Prints one JSON
object: per (transport, ip) the dial result (ok / error / elapsed), plus a kad
check in both directions (provider announced to the bootstrap node, and the
bootstrap node's own record found by the other node). Exit code 0 always unless
the harness itself breaks; the JSON says what worked.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peerctl import PeerError, PyPeer, cid_for, py_dial  # noqa: E402


def check_dial(transport: str, ip: str, fix: bool) -> dict:
    g = ["--fix-quic-ipv6"] if fix else []
    t0 = time.monotonic()
    try:
        with PyPeer(transport=transport, ip=ip, global_opts=g) as p:
            r = py_dial(p.addrs[0], count=3, timeout=12, global_opts=g)
    except PeerError as e:
        return {"ok": False, "error": f"listener: {e}", "elapsed_s": round(time.monotonic() - t0, 2)}
    ok = r.get("rc") == 0
    out = {"ok": ok, "elapsed_s": round(time.monotonic() - t0, 2)}
    if ok:
        out.update(connect_ms=r["connect_ms"], rtts_ms=r["rtts_ms"], agent=r["identify"]["agent_version"],
                   observed_addr=r["identify"]["observed_addr"])
    else:
        out["error"] = r.get("error")
    return out


def check_kad(transport: str, ip: str) -> dict:
    out: dict = {}
    key_a = cid_for(b"provided-by-A")
    key_b = cid_for(b"provided-by-B")
    with PyPeer(transport=transport, ip=ip, kad=True, seed=1) as boot:
        with PyPeer(transport=transport, ip=ip, kad=True, seed=2,
                    extra=["--bootstrap", boot.addrs[0], "--provide", key_a]) as a:
            out["a_bootstrap"] = a.read_line(20)
            out["a_provided"] = a.read_line(30)
            deadline = time.monotonic() + 5
            while True:  # the ADD_PROVIDER is handled asynchronously on the receiver
                r = boot.cmd({"cmd": "local_providers", "key": key_a})
                out["boot_has_a_record"] = any(p["peer_id"] == a.peer_id for p in r.get("providers", []))
                if out["boot_has_a_record"] or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            if not out["boot_has_a_record"]:
                out["boot_local_providers"] = r
            r = boot.cmd({"cmd": "provide", "key": key_b}, timeout=30)
            out["boot_provide"] = r
            r = a.cmd({"cmd": "find_providers", "key": key_b}, timeout=30)
            out["a_found_boot_record"] = any(p["peer_id"] == boot.peer_id for p in r.get("providers", []))
            if not out["a_found_boot_record"]:
                out["a_find_providers"] = r
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="skip the kad check")
    ap.add_argument("--with-fix", action="store_true", help="also run QUIC/::1 with --fix-quic-ipv6")
    args = ap.parse_args()
    res: dict = {"dial": {}, "kad": {}}
    for transport in ("quic", "tcp"):
        for ip in ("127.0.0.1", "::1"):
            res["dial"][f"{transport}/{ip}"] = check_dial(transport, ip, False)
    if args.with_fix:
        res["dial"]["quic/::1+fix"] = check_dial("quic", "::1", True)
    if not args.quick:
        for transport in ("quic", "tcp"):
            try:
                res["kad"][f"{transport}/127.0.0.1"] = check_kad(transport, "127.0.0.1")
            except PeerError as e:
                res["kad"][f"{transport}/127.0.0.1"] = {"error": str(e)}
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
