"""Four validator processes in network namespaces, cut into 2 + 2 and healed.

Each validator runs in its own namespace with one veth link to a hub
namespace, where validators 0 and 1 hang on one bridge and 2 and 3 on
another; a veth "trunk" joins the bridges. Taking the trunk down splits the
network 2 + 2 (each half still talks within itself); bringing it up heals it.
Needs root and iproute2: skipped, saying why, without them. Namespace names
carry the test process's ID and a random part, so parallel runs do not
collide; the namespaces (and with them every link) are deleted however the
test ends.
"""

import os
import secrets
import shutil
import subprocess
import time

import pytest

from chain_procs_testkit import ProcessChain
from hypermesh.consensus.driver import peer_id_of
from ledger_testkit import VALIDATOR_IDS, key, make_genesis

PORT = 4001
# Statuses each validator reports (every 0.25 s of its own clock) while we watch the split: 3 s, in which an
# undivided chain decides a dozen blocks or more.
SPLIT_STATUSES = 12


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


class SplitNetwork:
    """Namespaces ``<prefix>-v0`` … ``-v3`` and ``<prefix>-hub``; validator i at 10.77.0.(i+1)."""

    def __init__(self, prefix: str, count: int = 4):
        self.hub = f"{prefix}-hub"
        self.namespaces = [f"{prefix}-v{i}" for i in range(count)]
        self.created: list[str] = []

    def create(self) -> None:
        for name in [self.hub, *self.namespaces]:
            ip("netns", "add", name)
            self.created.append(name)
        hub = ["-n", self.hub]
        for bridge in ("br-a", "br-b"):
            ip(*hub, "link", "add", bridge, "type", "bridge")
            ip(*hub, "link", "set", bridge, "up")
        ip(*hub, "link", "add", "trunk-a", "type", "veth", "peer", "name", "trunk-b")
        for end, bridge in (("trunk-a", "br-a"), ("trunk-b", "br-b")):
            ip(*hub, "link", "set", end, "master", bridge, "up")
        for index, namespace in enumerate(self.namespaces):
            port = f"v{index}"
            ip(*hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", namespace)
            ip(*hub, "link", "set", port, "master", "br-a" if index < len(self.namespaces) // 2 else "br-b", "up")
            ip("-n", namespace, "addr", "add", f"{self.address(index)}/24", "dev", "eth0")
            ip("-n", namespace, "link", "set", "eth0", "up")
            ip("-n", namespace, "link", "set", "lo", "up")

    @staticmethod
    def address(index: int) -> str:
        return f"10.77.0.{index + 1}"

    def cut(self) -> None:
        ip("-n", self.hub, "link", "set", "trunk-a", "down")

    def heal(self) -> None:
        ip("-n", self.hub, "link", "set", "trunk-a", "up")

    def delete(self) -> None:
        for name in reversed(self.created):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def split_network():
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (ip netns add); run as root to cut validators apart")
    if shutil.which("ip") is None:
        pytest.skip("network namespaces need the ip command (iproute2), which is not installed")
    network = SplitNetwork(f"hm{os.getpid()}{secrets.token_hex(3)}")
    try:
        network.create()
    except subprocess.CalledProcessError as exc:
        network.delete()
        pytest.skip(f"cannot create network namespaces here: {' '.join(exc.cmd)}: {exc.stderr.strip()}")
    yield network
    network.delete()


def test_four_validators_cut_two_and_two_commit_nothing_then_resume_after_healing_without_divergence(
        tmp_path, split_network):
    addresses = [f"/ip4/{split_network.address(i)}/udp/{PORT}/quic-v1" for i in range(4)]
    full = [f"{addr}/p2p/{peer_id_of(key(VALIDATOR_IDS[i]))}" for i, addr in enumerate(addresses)]
    chain = ProcessChain(tmp_path, make_genesis(), addresses,
                         wrap=lambda index: ["ip", "netns", "exec", split_network.namespaces[index]])
    everyone = range(4)
    try:
        chain.start(everyone, peers=lambda index: [addr for i, addr in enumerate(full) if i != index])
        chain.all_reach(3, what="the chain committing across the namespaces")
        split_network.cut()
        cut_at = time.time()
        # What was in flight when the trunk went down is delivered (or lost) within a status tick or two:
        # at most the height then under way is decided.
        chain.statuses_after(everyone, 2, "statuses after the cut")
        split, before = chain.heights(), chain.decided_by(cut_at)
        assert max(split) <= before + 1, f"decided {split} after the cut, at {before} when it was cut"
        chain.statuses_after(everyone, SPLIT_STATUSES, "statuses during the split")
        assert chain.heights() == split, "a half without a quorum decided a block"
        split_network.heal()
        chain.all_reach(max(split) + 3, what="commits resuming after the heal")
        chain.assert_no_divergence()
        assert all(not v.evidence for v in chain.validators), "equivocation evidence against an honest validator"
    finally:
        chain.stop()
