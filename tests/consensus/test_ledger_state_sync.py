"""State sync over QUIC: a late node fetches a validator's snapshot and is where the chain is, verified."""

import pytest
import trio

from hypermesh.consensus.ledger import Ledger
from hypermesh.consensus.ledger_tx import Transfer, sign_transaction
from hypermesh.consensus.snapshot import ChunkMismatch
from hypermesh.consensus.state_sync import STATE_SYNC_PROTOCOL, SnapshotServer, StateSyncError, fetch_snapshot
from hypermesh.dht.streams import close_quietly
from hypermesh.transport.framing import BufferedReader, write_frame
from hypermesh.transport.identity import Identity
from ledger_testkit import LEDGER_CHAIN, STEP, USER_IDS, key, ledger_network, make_genesis

LATE = Identity.from_seed(b"late-node")
INTERVAL = 5


async def run_chain_with_server(services, height):
    server_host_ledger = services[0].core.app
    alice, bob = USER_IDS[0], USER_IDS[1]
    for nonce in range(4):
        tx = sign_transaction(alice, LEDGER_CHAIN, nonce, Transfer(key(bob), 10 + nonce))
        for service in services:
            service.core.app.submit(tx)
    with trio.fail_after(STEP):
        for service in services:
            await service.wait_for_height(height)
    return server_host_ledger


async def test_a_late_node_syncs_from_a_validators_snapshot_over_quic_and_reaches_the_same_root(tmp_path):
    genesis = make_genesis()
    async with ledger_network(tmp_path, genesis, extra_hosts=[LATE]) as (services, hosts):
        ledger = services[0].core.app
        server = SnapshotServer(hosts[0], ledger, interval=INTERVAL, chunk_size=600)
        services[0].on_commit.append(server.on_commit)
        server.start()
        await run_chain_with_server(services, 2 * INTERVAL + 1)
        late_host = hosts[-1]
        with trio.fail_after(STEP):
            synced, commit = await fetch_snapshot(late_host, hosts[0].peer_id, genesis, Ledger(genesis).validators)
        height = synced.state.height
        assert height == commit.certificate.height and height % INTERVAL == 1 and height > 1
        assert synced.roots[height] == ledger.roots[height]
        assert synced.last_certificate == commit.certificate  # it can take part from height + 1
        server.stop()


async def test_a_snapshot_offer_that_is_not_certified_by_the_trusted_validators_is_refused(tmp_path):
    genesis = make_genesis()
    async with ledger_network(tmp_path, genesis, extra_hosts=[LATE]) as (services, hosts):
        server = SnapshotServer(hosts[0], services[0].core.app, interval=INTERVAL)
        services[0].on_commit.append(server.on_commit)
        server.start()
        await run_chain_with_server(services, INTERVAL + 1)
        strangers = make_genesis(validators=7)  # trusting another set: the certificate is no quorum of it
        with trio.fail_after(STEP), pytest.raises(StateSyncError):
            await fetch_snapshot(hosts[-1], hosts[0].peer_id, genesis, Ledger(strangers).validators)


async def test_a_peer_serving_a_tampered_chunk_is_caught(tmp_path):
    genesis = make_genesis()
    async with ledger_network(tmp_path, genesis, extra_hosts=[LATE, Identity.from_seed(b"liar")]) as (services, hosts):
        honest = SnapshotServer(hosts[0], services[0].core.app, interval=INTERVAL, chunk_size=128)
        services[0].on_commit.append(honest.on_commit)
        honest.start()
        await run_chain_with_server(services, INTERVAL + 1)
        liar = hosts[-1]

        async def relay_with_a_flipped_byte(stream):
            # Forwards requests to the honest server, flipping a byte of every chunk it passes back.
            request = await BufferedReader(stream).read_frame(64)
            upstream = await liar.new_stream(hosts[0].peer_id, [STATE_SYNC_PROTOCOL])
            await write_frame(upstream, request)
            answer = await BufferedReader(upstream).read_frame(1 << 22)
            await close_quietly(upstream)
            if request[0] == 0x02:
                answer = answer[:-1] + bytes([answer[-1] ^ 1])
            await write_frame(stream, answer)
            await close_quietly(stream)

        liar.set_stream_handler(STATE_SYNC_PROTOCOL, relay_with_a_flipped_byte)
        with trio.fail_after(STEP), pytest.raises(ChunkMismatch):
            await fetch_snapshot(hosts[-2], liar.peer_id, genesis, Ledger(genesis).validators)
