"""In-process nodes for the capsule mesh tests: real QUIC hosts on [::1], real DHTs, real runtimes."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import trio

from capsule_testkit import BUILDER
from hypermesh.capsules.chunks import ChunkStore
from hypermesh.capsules.distribution import CapsuleDistribution
from hypermesh.capsules.executor import CapsuleExecutor
from hypermesh.capsules.remote import RemoteRunLimits, RemoteRunService
from hypermesh.capsules.runtime import CapsuleRuntime
from hypermesh.capsules.trust import TrustPolicy
from hypermesh.dht.discovery import open_discovery
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity

V6 = "/ip6/::1/udp/0/quic-v1"
# Loopback answers in milliseconds; this only bounds a hung test.
STEP = 30


@dataclass
class Node:
    identity: Identity
    host: object
    discovery: object
    runtime: CapsuleRuntime
    store: ChunkStore
    distribution: CapsuleDistribution
    executor: CapsuleExecutor
    remote_runs: RemoteRunService

    @property
    def peer_id(self):
        return self.host.peer_id


@contextlib.asynccontextmanager
async def open_node(directory: Path, engine, bootstrap: list[str] = (), limits: RemoteRunLimits | None = None):
    """A host, its DHT, a runtime trusting the test builder, distribution and remote runs, all under ``directory``."""
    identity = Identity.generate()
    policy = TrustPolicy()
    policy.trust(BUILDER.peer_id)
    async with (open_host(identity, [V6]) as host,
                open_discovery(host, directory / "dht", bootstrap=bootstrap) as discovery):
        runtime = CapsuleRuntime(directory, identity=identity, policy=policy, engine=engine)
        try:
            store = ChunkStore(directory / "capsules" / "chunks")
            distribution = CapsuleDistribution(host, discovery, store, runtime)
            distribution.install_handler()
            executor = CapsuleExecutor(runtime)
            remote_runs = RemoteRunService(host, executor, distribution, limits or RemoteRunLimits())
            remote_runs.install_handler()
            yield Node(identity, host, discovery, runtime, store, distribution, executor, remote_runs)
        finally:
            runtime.close()


@contextlib.asynccontextmanager
async def open_mesh(tmp_path: Path, engine, count: int, limits: RemoteRunLimits | None = None):
    """``count`` nodes; every node after the first bootstraps from the first."""
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(open_node(tmp_path / "n0", engine, limits=limits))
        address = first.host.listen_addrs()[0]
        nodes = [first]
        for index in range(1, count):
            nodes.append(await stack.enter_async_context(open_node(tmp_path / f"n{index}", engine, [address], limits)))
        with trio.fail_after(STEP):
            for node in nodes[1:]:
                await node.discovery.service.bootstrap()
        yield nodes


async def find_providers(node: Node, cid: str, expected: set) -> None:
    """Retry the lookup itself until the provider records have propagated (bounded by the caller)."""
    for _ in range(200):
        found = {info.peer_id for info in await node.discovery.find_providers(cid)}
        if expected <= found:
            return
        await trio.sleep(0.05)
    raise AssertionError(f"providers {expected} of {cid} never appeared")
