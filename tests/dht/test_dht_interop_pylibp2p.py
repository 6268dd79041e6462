"""Wire compatibility with py-libp2p 0.8.1's Kademlia DHT, both directions, over QUIC.

Uses the interop harness's py-libp2p peer (tests/interop/pylibp2p_peer.py)
in its own virtualenv; skipped when that is not set up (`make interop-setup`).
"""

import os
import sys
from pathlib import Path

import pytest
import trio

from hypermesh.dht.discovery import open_discovery
from hypermesh.dht.keys import Cid
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "interop"))
from peerctl import INTEROP_PY, PyPeer  # noqa: E402

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(not os.path.exists(INTEROP_PY), reason="py-libp2p venv missing: run `make interop-setup`"),
]
V4 = "/ip4/127.0.0.1/udp/0/quic-v1"
STEP = 45  # one bounded phase: py-libp2p's own timeouts are 15-20 s


async def pycmd(peer, request):
    reply = await trio.to_thread.run_sync(peer.cmd, request)
    assert reply.get("ok"), reply
    return reply


async def test_provider_records_cross_between_hypermesh_and_pylibp2p(tmp_path):
    peer = await trio.to_thread.run_sync(lambda: PyPeer(transport="quic", ip="127.0.0.1", kad=True))
    try:
        async with open_host(Identity.generate(), [V4]) as host:
            async with open_discovery(host, tmp_path, bootstrap=[peer.addrs[0]]) as discovery:
                with trio.fail_after(STEP):
                    # FIND_NODE to py-libp2p: it answers and lands in our table.
                    await discovery.service.bootstrap()
                    assert peer.peer_id in {str(e.peer_id) for e in discovery.service.core.routing.entries()}
                    await pycmd(peer, {"cmd": "add_peer", "addr": host.listen_addrs()[0]})

                with trio.fail_after(STEP):
                    # py-libp2p's ADD_PROVIDER is stored by us; our GET_PROVIDERS finds it.
                    theirs = Cid.for_string("provided by py-libp2p")
                    await pycmd(peer, {"cmd": "provide", "key": str(theirs)})
                    providers = await discovery.find_providers(theirs)
                    assert peer.peer_id in {str(p.peer_id) for p in providers}

                with trio.fail_after(STEP):
                    # Our ADD_PROVIDER is stored by py-libp2p, and its lookup finds us.
                    ours = Cid.for_string("provided by hypermesh")
                    discovery.provide(ours)
                    await discovery.wait_provided(ours)
                    stored = await pycmd(peer, {"cmd": "local_providers", "key": str(ours)})
                    assert str(host.peer_id) in {p["peer_id"] for p in stored["providers"]}
                    found = await pycmd(peer, {"cmd": "find_providers", "key": str(ours), "count": 1})
                    assert [p["peer_id"] for p in found["providers"]] == [str(host.peer_id)]
    finally:
        await trio.to_thread.run_sync(peer.close)


async def test_provider_records_cross_when_our_node_is_the_bootstrap(tmp_path):
    theirs = Cid.for_string("provided by py-libp2p, bootstrapped from us")
    ours = Cid.for_string("provided by hypermesh, the bootstrap node")
    async with open_host(Identity.generate(), [V4]) as host:
        async with open_discovery(host, tmp_path) as discovery:
            our_addr = host.listen_addrs()[0]

            def start_peer():
                return PyPeer(transport="quic", ip="127.0.0.1", kad=True,
                              extra=["--bootstrap", our_addr, "--provide", str(theirs)])

            peer = await trio.to_thread.run_sync(start_peer)
            try:
                with trio.fail_after(STEP):
                    # It joins through us and sends us its ADD_PROVIDER.
                    for expected in ("bootstrap", "provided"):
                        line = await trio.to_thread.run_sync(peer.read_line, STEP)
                        assert line["event"] == expected and line["ok"], line
                    providers = await discovery.find_providers(theirs)
                    assert peer.peer_id in {str(p.peer_id) for p in providers}

                with trio.fail_after(STEP):
                    # We provide; its GET_PROVIDERS (to us, its only DHT server) finds us.
                    await discovery.service.wait_for_routing_peers(1)
                    discovery.provide(ours)
                    await discovery.wait_provided(ours)
                    found = await pycmd(peer, {"cmd": "find_providers", "key": str(ours), "count": 1})
                    assert [p["peer_id"] for p in found["providers"]] == [str(host.peer_id)]
            finally:
                await trio.to_thread.run_sync(peer.close)
