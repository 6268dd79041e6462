"""The composition root: one process, one identity, every layer wired together.

    transport (Host) ← dht (Discovery) ← capsules (runtime, distribution) ← control socket
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator

import trio

from hypermesh.capsules.chunks import ChunkStore
from hypermesh.capsules.distribution import CapsuleDistribution
from hypermesh.capsules.executor import CapsuleExecutor
from hypermesh.capsules.remote import RemoteRunService
from hypermesh.capsules.runtime import CapsuleRuntime
from hypermesh.dht.discovery import Discovery, open_discovery
from hypermesh.dht.kademlia import Mode
from hypermesh.transport.errors import TransportError
from hypermesh.transport.host import Host, HostConfig, open_host
from hypermesh.transport.identity import Identity, init_identity
from hypermesh.transport.multiaddrs import MultiaddrError, parse_quic_address

from . import operations
from .config import DEFAULT_LISTEN
from .control import ControlServer

log = logging.getLogger("hypermesh.node")

BOOTSTRAP_RETRY_SECONDS = (1, 2, 5, 10, 30)


@dataclass
class Node:
    identity: Identity
    data_dir: Path
    host: Host
    discovery: Discovery
    runtime: CapsuleRuntime
    distribution: CapsuleDistribution
    executor: CapsuleExecutor
    remote_runs: RemoteRunService


@contextlib.asynccontextmanager
async def open_node(
    identity: Identity,
    data_dir: Path,
    listen: list[str],
    bootstrap: list[str] = (),
    *,
    dht_mode: Mode = Mode.SERVER,
    host_config: HostConfig | None = None,
    serve_perf: bool = False,
) -> AsyncIterator[Node]:
    """Every layer of a node, running until the block exits."""
    for addr in bootstrap:
        if parse_quic_address(addr).peer_id is None:
            raise MultiaddrError(f"bootstrap address {addr} lacks /p2p/<peer id>")
    async with open_host(identity, listen, host_config, serve_perf=serve_perf) as host:
        async with open_discovery(host, data_dir, bootstrap=list(bootstrap), mode=dht_mode) as discovery:
            runtime = CapsuleRuntime(data_dir, identity=identity)
            try:
                runtime.install_stored()
                distribution = CapsuleDistribution(
                    host, discovery, ChunkStore(data_dir / "capsules" / "chunks"), runtime
                )
                distribution.install_handler()
                executor = CapsuleExecutor(runtime)
                remote_runs = RemoteRunService(host, executor, distribution)
                remote_runs.install_handler()
                yield Node(identity, data_dir, host, discovery, runtime, distribution, executor, remote_runs)
            finally:
                runtime.close()


class _Registries:
    """Several Prometheus registries served as one."""

    def __init__(self, *registries):
        self._registries = registries

    def collect(self):
        for registry in self._registries:
            yield from registry.collect()


def start_metrics_server(addr: str, node: Node) -> None:
    """Serve Prometheus metrics on ``HOST:PORT`` (``[::1]:9100`` for IPv6).

    The transport's metrics are process-wide; the DHT's are the node's own.
    """
    from prometheus_client import REGISTRY, start_http_server

    host, _, port = addr.rpartition(":")
    host = host.strip("[]") or "::"
    try:
        start_http_server(int(port), addr=host, registry=_Registries(REGISTRY, node.discovery.service.metrics.registry))
    except (ValueError, OSError) as exc:
        raise TransportError(f"cannot serve metrics on {addr}: {exc}") from None


async def _bootstrap(host, addr: str) -> None:
    """Connect to a bootstrap peer, retrying with back-off until it answers."""
    for delay in (*BOOTSTRAP_RETRY_SECONDS, None):
        try:
            await host.connect(addr)
            log.info("connected to bootstrap peer %s", addr)
            return
        except TransportError as exc:
            if delay is None:
                log.warning("giving up on bootstrap peer %s: %s", addr, exc)
                return
            log.info("bootstrap peer %s not reachable (%s); retrying in %ss", addr, exc, delay)
            await trio.sleep(delay)


async def run_node(args) -> int:
    identity, created = init_identity(args.data_dir)
    if created:
        log.warning("created a new identity %s in %s", identity.peer_id, args.data_dir)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(
            identity, args.data_dir, args.listen or DEFAULT_LISTEN, args.bootstrap,
            host_config=HostConfig(connection_manager=args.connection_limits), serve_perf=args.perf,
        ) as node:
            if args.metrics:
                start_metrics_server(args.metrics, node)
            control_server = ControlServer(args.data_dir)
            operations.register_all(control_server, node)
            await node.host.start(control_server.serve)
            addrs = node.host.listen_addrs()
            if args.json:
                sys.stdout.write(json.dumps({"peer_id": str(identity.peer_id), "addrs": addrs}) + "\n")
                sys.stdout.flush()
            else:
                print(f"HyperMesh node {identity.peer_id}", flush=True)
                for addr in addrs:
                    print(f"  listening on {addr}", flush=True)
            for addr in args.bootstrap:
                node.host.start_soon(_bootstrap, node.host, addr)
            async for signum in signals:
                log.info("received %s, shutting down", signal.Signals(signum).name)
                break
    return 0
