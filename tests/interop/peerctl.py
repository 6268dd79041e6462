"""Tiny driver for pylibp2p_peer.py (stdlib only; usable from either venv).

    from tests.interop.peerctl import PyPeer, cid_for
    with PyPeer(transport="quic", ip="127.0.0.1", kad=True) as p:
        print(p.peer_id, p.addrs)
        print(p.cmd({"cmd": "ping", "addr": other_addr, "count": 3}))

Every read is bounded by a timeout; the child is killed on exit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
INTEROP_PY = os.environ.get("HYPERMESH_INTEROP_PY", os.path.join(REPO, ".venv-interop", "bin", "python"))
PEER_SCRIPT = os.path.join(HERE, "pylibp2p_peer.py")


def cid_for(data: bytes) -> str:
    """CIDv1 (raw codec 0x55, sha2-256) in base32 ('b...'), as used by IPFS/kad."""
    mh = b"\x12\x20" + hashlib.sha256(data).digest()
    raw = b"\x01\x55" + mh
    return "b" + base64.b32encode(raw).decode().lower().rstrip("=")


class PeerError(RuntimeError):
    pass


class PyPeer:
    """A py-libp2p peer in a subprocess, controlled over its JSON-lines stdin/stdout."""

    def __init__(
        self,
        transport: str = "quic",
        ip: str = "127.0.0.1",
        kad: bool = False,
        seed: int | None = None,
        extra: list[str] | None = None,
        global_opts: list[str] | None = None,
        startup_timeout: float = 15.0,
        python: str = INTEROP_PY,
        stderr_path: str | None = None,
    ) -> None:
        argv = [python, PEER_SCRIPT, *(global_opts or []), "listen", "--transport", transport, "--ip", ip]
        if kad:
            argv.append("--kad")
        if seed is not None:
            argv += ["--seed", str(seed)]
        argv += extra or []
        self._stderr = open(stderr_path, "wb") if stderr_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            bufsize=1,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._next_id = 0
        try:
            first = self.read_line(startup_timeout)
        except Exception:
            self.close()
            raise
        if first.get("event") != "listening":
            self.close()
            raise PeerError(f"peer failed to start: {first}")
        self.info = first
        self.peer_id: str = first["peer_id"]
        self.addrs: list[str] = first["addrs"]

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def read_line(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PeerError(f"no output from py-libp2p peer within {timeout}s")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise PeerError(f"py-libp2p peer exited (rc={self.proc.poll()})")
            line = line.strip()
            if line:
                return json.loads(line)

    def cmd(self, req: dict[str, Any], timeout: float = 20.0) -> dict[str, Any]:
        """Send one command and wait for the reply with the same id."""
        self._next_id += 1
        req = {**req, "id": self._next_id}
        req.setdefault("timeout", max(1.0, timeout - 2.0))
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        while True:
            resp = self.read_line(max(0.01, deadline - time.monotonic()))
            if resp.get("id") == self._next_id:
                return resp

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            except Exception:
                pass
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=2)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        if self._stderr not in (None, subprocess.DEVNULL):
            self._stderr.close()  # type: ignore[union-attr]

    def __enter__(self) -> "PyPeer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def py_dial(addr: str, count: int = 3, timeout: float = 20.0, global_opts: list[str] | None = None) -> dict[str, Any]:
    """Run `pylibp2p_peer.py dial` and return its JSON (adds "rc")."""
    argv = [INTEROP_PY, PEER_SCRIPT, *(global_opts or []), "dial", "--addr", addr, "--count", str(count), "--timeout", str(timeout)]
    try:
        cp = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 10)
    except subprocess.TimeoutExpired:
        return {"error": "dial subprocess hung (killed)", "rc": -9}
    lines = [ln for ln in cp.stdout.splitlines() if ln.strip()]
    out = json.loads(lines[-1]) if lines else {"error": f"no output; stderr tail: {cp.stderr[-500:]}"}
    out["rc"] = cp.returncode
    return out


if __name__ == "__main__":  # pragma: no cover - manual smoke
    with PyPeer(transport=sys.argv[1] if len(sys.argv) > 1 else "quic") as p:
        print(p.info)
        print(py_dial(p.addrs[0]))
