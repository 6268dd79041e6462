"""Start and stop ``hypermesh run`` processes: used by the demo, the
multi-process tests and the benches, so that all of them drive real nodes."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

STARTUP_TIMEOUT = 30.0
SHUTDOWN_TIMEOUT = 10.0


class NodeStartError(RuntimeError):
    pass


def hypermesh_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hypermesh.node.cli", *args]


def _read_line(stream, deadline: float) -> bytes:
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    line = b""
    try:
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise NodeStartError("node did not print its address in time")
            chunk = os.read(stream.fileno(), 1)
            if not chunk:
                raise NodeStartError("node exited before printing its address")
            line += chunk
    finally:
        selector.close()
    return line


@dataclass
class NodeProcess:
    data_dir: Path
    process: subprocess.Popen
    peer_id: str = ""
    addrs: list[str] = field(default_factory=list)

    def addr(self, prefix: str = "/ip6/") -> str:
        return next(addr for addr in self.addrs if addr.startswith(prefix))

    def stop(self) -> int:
        """SIGTERM, then wait; SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(SHUTDOWN_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def start_node(data_dir: Path, listen: list[str] | None = None, extra: list[str] | None = None,
               stderr=None) -> NodeProcess:
    """Start ``hypermesh run --json`` and wait for its address line."""
    args = ["run", "--data-dir", str(data_dir), "--json"]
    for addr in listen or ["/ip6/::1/udp/0/quic-v1"]:
        args += ["--listen", addr]
    args += extra or []
    process = subprocess.Popen(
        hypermesh_command(*args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=stderr if stderr is not None else subprocess.DEVNULL,
    )
    node = NodeProcess(data_dir=Path(data_dir), process=process)
    try:
        info = json.loads(_read_line(process.stdout, time.monotonic() + STARTUP_TIMEOUT))
    except BaseException:
        node.stop()
        raise
    node.peer_id = info["peer_id"]
    node.addrs = info["addrs"]
    return node


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        hypermesh_command(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
