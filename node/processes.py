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
# Nodes started together share two cores with everything else: more time each.
STARTUP_TIMEOUT_PER_NODE = 5.0
SHUTDOWN_TIMEOUT = 10.0


class NodeStartError(RuntimeError):
    pass


def hypermesh_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "hypermesh.node.cli", *args]


def read_line(stream, deadline: float) -> bytes:
    """One line from a process's pipe, by ``deadline`` (time.monotonic)."""
    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    line = b""
    try:
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not selector.select(remaining):
                raise NodeStartError("no line from the process in time")
            chunk = os.read(stream.fileno(), 1)
            if not chunk:
                raise NodeStartError("the process closed its output before a whole line")
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
        self.terminate()
        return self.wait_stopped()

    def terminate(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def wait_stopped(self) -> int:
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
               stderr=None, startup_timeout: float | None = None) -> NodeProcess:
    """Start ``hypermesh run --json`` and wait for its address line."""
    (node,) = start_nodes([data_dir], listen, extra, stderr, startup_timeout=startup_timeout)
    return node


def start_nodes(data_dirs: list[Path], listen: list[str] | None = None, extra: list[str] | None = None,
                stderr=None, own_session: bool = False, startup_timeout: float | None = None) -> list[NodeProcess]:
    """Start one ``hypermesh run --json`` per data directory, all at once, and
    wait for each one's address line; if any fails, stop them all. ``stderr``
    is one stream for all, or a list with one per data directory. With
    ``own_session`` a terminal's Ctrl-C reaches only us, not the nodes, so
    that we stop each one once. ``startup_timeout`` replaces the default wait for them all."""
    nodes = []
    stderrs = stderr if isinstance(stderr, list) else [stderr] * len(data_dirs)
    try:
        for data_dir, node_stderr in zip(data_dirs, stderrs):
            args = ["run", "--data-dir", str(data_dir), "--json"]
            for addr in listen or ["/ip6/::1/udp/0/quic-v1"]:
                args += ["--listen", addr]
            process = subprocess.Popen(
                hypermesh_command(*args, *(extra or [])), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=node_stderr if node_stderr is not None else subprocess.DEVNULL,
                start_new_session=own_session,
            )
            nodes.append(NodeProcess(data_dir=Path(data_dir), process=process))
        if startup_timeout is None:
            startup_timeout = STARTUP_TIMEOUT + STARTUP_TIMEOUT_PER_NODE * len(nodes)
        deadline = time.monotonic() + startup_timeout
        for node in nodes:
            info = json.loads(read_line(node.process.stdout, deadline))
            node.peer_id = info["peer_id"]
            node.addrs = info["addrs"]
    except BaseException:
        stop_all(nodes)
        raise
    return nodes


def stop_all(nodes: list[NodeProcess]) -> list[int]:
    """SIGTERM to every node at once (one signal each: a second one would cut
    a clean shutdown short), then wait for each; SIGKILL if one does not exit in time."""
    for node in nodes:
        node.terminate()
    return [node.wait_stopped() for node in nodes]


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    return subprocess.run(
        hypermesh_command(*args), stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout
    )
