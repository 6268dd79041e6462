"""The composition root: one process, one identity, every layer wired together.

    transport (Host) ← dht (Discovery) ← capsules (runtime, distribution), trust, chain ← control socket
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
from hypermesh.capsules.remote import RemoteRunLimits, RemoteRunService
from hypermesh.capsules.runtime import CapsuleRuntime
from hypermesh.capsules.trust import POLICY_FILE, TrustPolicy
from hypermesh.dht.discovery import Discovery, open_discovery
from hypermesh.dht.kademlia import KadConfig, Mode
from hypermesh.transport.errors import TransportError
from hypermesh.transport.host import Host, HostConfig, open_host
from hypermesh.transport.identity import (
    Identity, IdentityError, PeerId, key_path, load_identity, write_private_file,
)
from hypermesh.trust.engine import TrustEngine
from hypermesh.trust.service import TrustService
from hypermesh.trust.store import TrustStore
from hypermesh.transport.multiaddrs import MultiaddrError, parse_quic_address

from . import operations
from .chain import NodeChain, check_chain_dir, serve_chain
from .config import DEFAULT_LISTEN
from .control import ControlServer
from .datadir import locked_data_dir

log = logging.getLogger("hypermesh.node")

# Bonded stake per peer when the node runs no chain (see open_trust).
STAKE_FILE = "stake.json"
BOOTSTRAP_RETRY_SECONDS = (1, 2, 5, 10, 30)
# A bootstrap peer that has not answered in this long is retried later.
BOOTSTRAP_DIAL_TIMEOUT = 3.0


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
    trust: TrustService
    # The ledger chain, when the node runs one (hypermesh run --genesis).
    chain: NodeChain | None = None


@contextlib.asynccontextmanager
async def open_node(
    identity: Identity,
    data_dir: Path,
    listen: list[str],
    bootstrap: list[str] = (),
    *,
    dht_mode: Mode = Mode.SERVER,
    kad_config: KadConfig = KadConfig(),
    host_config: HostConfig | None = None,
    serve_perf: bool = False,
    remote_run_limits: RemoteRunLimits = RemoteRunLimits(),
) -> AsyncIterator[Node]:
    """Every layer of a node, running until the block exits."""
    for addr in bootstrap:
        if parse_quic_address(addr).peer_id is None:
            raise MultiaddrError(f"bootstrap address {addr} lacks /p2p/<peer id>")
    async with open_host(identity, listen, host_config, serve_perf=serve_perf) as host:
        async with open_discovery(
            host, data_dir, bootstrap=list(bootstrap), mode=dht_mode, config=kad_config
        ) as discovery:
            trust = open_trust(host, identity, data_dir, discovery)
            runtime = CapsuleRuntime(data_dir, identity=identity)
            try:
                runtime.install_stored()
                distribution = CapsuleDistribution(
                    host, discovery, ChunkStore(data_dir / "capsules" / "chunks"), runtime
                )
                distribution.install_handler()
                executor = CapsuleExecutor(runtime)
                remote_runs = RemoteRunService(host, executor, distribution, remote_run_limits)
                remote_runs.install_handler()
                yield Node(identity, data_dir, host, discovery, runtime, distribution, executor, remote_runs, trust)
            finally:
                runtime.close()
                trust.store.close()


def open_trust(host: Host, identity: Identity, data_dir: Path, discovery: Discovery) -> TrustService:
    """The trust engine with its saved state, serving /hm/trust/1.0.0, enforcing shuns
    and counting the DHT's reports of malformed messages, rate-limit hits and liveness checks.

    Bonded stake comes from the ledger when the node runs a chain (node/chain.py
    updates it as bonds change); otherwise from ``stake.json`` in the data
    directory (``{"<peer id>": units, ...}``), if any.
    """
    engine = TrustEngine(identity.peer_id)
    engine.set_stake(_static_stake(data_dir / STAKE_FILE))
    store = TrustStore.in_data_dir(data_dir)
    service = TrustService(host, identity, engine, store)
    skipped = store.load(engine, service.clock())
    if skipped:
        log.warning("trust store: skipped %d damaged row(s) in %s", skipped, store.path)
    service.install(discovery.service)
    return service


def _static_stake(path: Path) -> dict[PeerId, float]:
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text())
        return {PeerId.from_base58(peer): float(units) for peer, units in document.items()}
    except (OSError, ValueError, AttributeError, IdentityError) as exc:
        raise ValueError(f"{path}: not a stake file ({{\"<peer id>\": units}}): {exc}") from None


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
    except (ValueError, OverflowError, OSError) as exc:
        raise TransportError(f"cannot serve metrics on {addr}: {exc}") from None


async def _bootstrap(host, addr: str) -> None:
    """Connect to a bootstrap peer, retrying with back-off until it answers.
    The first failure is a warning (a mistyped address shows at once); the
    retries are logged at info."""
    for attempt, delay in enumerate((*BOOTSTRAP_RETRY_SECONDS, None)):
        problem = f"no answer within {BOOTSTRAP_DIAL_TIMEOUT:g} s"
        with trio.move_on_after(BOOTSTRAP_DIAL_TIMEOUT):
            try:
                await host.connect(addr)
                log.info("connected to bootstrap peer %s", addr)
                return
            except TransportError as exc:
                problem = str(exc)
        if delay is None:
            log.warning("giving up on bootstrap peer %s: %s", addr, problem)
            return
        log.log(logging.WARNING if attempt == 0 else logging.INFO,
                "bootstrap peer %s is not reachable (%s); retrying in %s s", addr, problem, delay)
        await trio.sleep(delay)


def _trust_signers(data_dir: Path, signers: list[str]) -> None:
    """Add the configured capsule signers to the trust policy file, which the
    capsule runtime follows (as `hypermesh capsule trust` does)."""
    path = Path(data_dir) / POLICY_FILE
    policy = TrustPolicy.load(path)
    for signer in signers:
        policy.trust(signer)
    policy.save(path)


def _identity_for_run(data_dir: Path) -> tuple[Identity, bool]:
    """The node's identity, and whether it is new (then saved only once the
    node listens, so that a node that cannot start leaves no trace)."""
    if key_path(data_dir).exists():
        return load_identity(data_dir), False
    return Identity.generate(), True


async def run_node(args) -> int:
    with locked_data_dir(args.data_dir):
        return await _run_locked_node(args)


async def _run_locked_node(args) -> int:
    if args.chain is not None:  # before anything listens or is written
        check_chain_dir(args.data_dir, args.chain.genesis)
    identity, created = _identity_for_run(args.data_dir)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with open_node(
            identity, args.data_dir, args.listen or DEFAULT_LISTEN, args.bootstrap,
            dht_mode=Mode(args.dht_mode), kad_config=KadConfig(disjoint_paths=args.dht_disjoint_paths),
            host_config=HostConfig(connection_manager=args.connection_limits), serve_perf=args.perf,
            remote_run_limits=RemoteRunLimits(
                max_input_bytes=args.remote_max_input_bytes, per_peer_running=args.remote_per_peer_running,
                per_peer_queued=args.remote_per_peer_queued, total_running=args.remote_total_running),
        ) as node:
            if args.metrics:
                start_metrics_server(args.metrics, node)
            if created:
                write_private_file(key_path(args.data_dir), identity.private_key_pem())
                log.warning("created a new identity %s in %s", identity.peer_id, args.data_dir)
            if args.trust:
                _trust_signers(args.data_dir, args.trust)
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
            async with trio.open_nursery() as nursery:
                if args.chain is not None:  # in the background: a state sync may wait for a validator
                    node.chain = NodeChain(args.chain)
                    nursery.start_soon(serve_chain, node)
                async for signum in signals:
                    log.info("received %s, shutting down", signal.Signals(signum).name)
                    break
                nursery.cancel_scope.cancel()
    return 0
