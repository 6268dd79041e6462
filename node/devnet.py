"""``hypermesh devnet``: a local mesh of real node processes on [::1].

Node 0 starts first; every other node bootstraps from it. Each node is an
ordinary ``hypermesh run`` in its own data directory (``node-0`` …), logging
to ``node.log`` there, so that every CLI command works against it with
``--data-dir``. Stopping the devnet stops every node; a temporary root
directory is removed, a given one (``--dir``) is kept for the next start.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import trio

from . import control
from .processes import NodeProcess, NodeStartError, start_nodes, stop_all

# How long the nodes may take to find each other in the DHT.
JOIN_TIMEOUT = 60.0


class DevnetError(Exception):
    """The devnet could not come up; the message says which node and why."""


@dataclass
class Devnet:
    root: Path
    nodes: list[NodeProcess]

    def to_json(self) -> dict:
        return {
            "dir": str(self.root),
            "nodes": [{"data_dir": str(node.data_dir), "peer_id": node.peer_id, "addr": node.addr(),
                       "pid": node.process.pid}
                      for node in self.nodes],
        }


@contextlib.contextmanager
def open_devnet(count: int, root: Path | None = None) -> Iterator[Devnet]:
    """``count`` nodes, each with a DHT peer, until the block exits."""
    temporary = root is None
    root = Path(tempfile.mkdtemp(prefix="hypermesh-devnet-")) if temporary else Path(root).expanduser()
    nodes: list[NodeProcess] = []
    logs = []
    try:
        data_dirs = [root / f"node-{index}" for index in range(count)]
        for data_dir in data_dirs:
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            logs.append(open(data_dir / "node.log", "ab"))
        try:
            nodes += start_nodes(data_dirs[:1], stderr=logs[:1], own_session=True)
            nodes += start_nodes(data_dirs[1:], extra=["--bootstrap", nodes[0].addr()], stderr=logs[1:],
                                 own_session=True)
        except NodeStartError:
            raise DevnetError(_why_a_node_did_not_start(data_dirs)) from None
        if count > 1:
            trio.run(_wait_until_joined, nodes)
        yield Devnet(root, nodes)
    finally:
        stop_all(nodes)
        for log in logs:
            log.close()
        if temporary:
            shutil.rmtree(root, ignore_errors=True)


def _why_a_node_did_not_start(data_dirs: list[Path]) -> str:
    for data_dir in data_dirs:
        lines = (data_dir / "node.log").read_text(errors="replace").strip().splitlines()
        if lines and lines[-1].startswith("error: "):
            return f"the node in {data_dir} did not start: {lines[-1].removeprefix('error: ')}"
    return f"a node did not start; see the node.log files in {data_dirs[0].parent}"


async def _wait_until_joined(nodes: list[NodeProcess]) -> None:
    async with trio.open_nursery() as nursery:
        for node in nodes:
            nursery.start_soon(_wait_for_a_dht_peer, node)


async def _wait_for_a_dht_peer(node: NodeProcess) -> None:
    await control.call(node.data_dir, "dht.wait", peers=1, timeout=JOIN_TIMEOUT)
