"""Locks on real hosts: four validators over QUIC on loopback, two clients contending through the lock client."""

import contextlib

import pytest
import trio

from hypermesh.consensus.driver import peer_id_of
from hypermesh.consensus.ledger_node import run_ledger_node
from hypermesh.consensus.ledger_query import QueryError, fetch_answer
from hypermesh.consensus.ledger_tx import TtlOutOfRange
from hypermesh.consensus.linearizability import check_lock_history, lease_overlaps
from hypermesh.consensus.lock_client import LockClient, describe_lock, describe_outcome, verify_lock_answer
from hypermesh.consensus.locks import Lease, OutcomeCode, lock_entry_key
from hypermesh.transport.identity import Identity
from ledger_testkit import CONFIG, LEDGER_CHAIN, STEP, USER_IDS, VALIDATOR_IDS, connected_hosts, make_genesis

NAME = b"leader"
NOBODY = Identity.from_seed(b"lock-test-nobody").peer_id  # no address known: a node the client cannot reach


@contextlib.asynccontextmanager
async def lock_network(tmp_path):
    """Four validators (the whole chain stack each) and two client hosts."""
    genesis = make_genesis()
    validators = VALIDATOR_IDS[:4]
    async with connected_hosts(validators + USER_IDS[:2]) as hosts, contextlib.AsyncExitStack() as stack:
        nodes = []
        for index, (host, identity) in enumerate(zip(hosts, validators)):
            (tmp_path / f"v{index}").mkdir()
            nodes.append(await stack.enter_async_context(
                run_ledger_node(host, genesis, identity, tmp_path / f"v{index}", config=CONFIG)))
        yield nodes, hosts[4:]


async def test_two_clients_contend_for_one_lock_and_the_loser_gets_it_after_release_and_expiry(tmp_path):
    """Exactly one holds it; the other is refused with holder and expiry, gets it after release or expiry with a
    larger token; a proven read verifies offline; a retried request ID has one effect; the history is
    linearizable. (One network for all of it: booting four validators is most of the cost.)"""
    history = []
    async with lock_network(tmp_path) as (nodes, (alice_host, bob_host)):
        trusted = nodes[0].ledger.validators
        validator_peers = [peer_id_of(v.public_key) for v in trusted.validators]
        alice = LockClient(alice_host, USER_IDS[0], LEDGER_CHAIN, trusted, history=history)
        # Bob's first choice cannot be reached: he tries the next node.
        bob = LockClient(bob_host, USER_IDS[1], LEDGER_CHAIN, trusted, peers=[NOBODY] + validator_peers,
                         history=history)
        outcomes = {}

        async def contend(client):
            outcomes[client] = await client.acquire(NAME, 60_000)

        with trio.fail_after(STEP):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(contend, alice)
                nursery.start_soon(contend, bob)
            winner, loser = (alice, bob) if outcomes[alice].ok else (bob, alice)
            won, lost = outcomes[winner], outcomes[loser]
            assert won.code is OutcomeCode.GRANTED and lost.code is OutcomeCode.HELD  # exactly one holds it
            assert (lost.holder, lost.expiry, lost.token) == (winner.sender, won.expiry, won.token)
            assert not (await loser.acquire(NAME, 60_000)).ok
            assert (await loser.release(NAME, won.token)).code is OutcomeCode.NOT_HOLDER  # not his to release
            assert (await winner.release(NAME, won.token)).code is OutcomeCode.RELEASED
            taken = await loser.acquire(NAME, 60_000)
            assert taken.ok and taken.token > won.token

            # Expiry by block time: the loser retries until a block's time passes the winner's short lease.
            short = await winner.acquire(b"short", 300)
            assert short.ok
            for _ in range(200):
                later = await loser.acquire(b"short", 5_000)
                if later.ok:
                    break
                assert later.holder == winner.sender
            assert later.ok and later.token > short.token and later.time >= short.expiry

            # Bob's read skips the node he cannot reach; Alice keeps an answer to check offline.
            assert (await bob.read(b"short")).height > 0
            for _ in range(20):  # the lease is proven once the block after its decision is certified
                answer = await fetch_answer(alice_host, validator_peers[3], lock_entry_key(NAME))
                proven = verify_lock_answer(answer, NAME, LEDGER_CHAIN, trusted)
                if proven.lease is not None:
                    break
                await nodes[3].consensus.wait_for_height(nodes[3].ledger.state.height + 1)

            # A restarted client that knows only the request ID gets the first answer, and nothing changes.
            request_id = b"r" * 16
            first = await alice.acquire(b"retried", 60_000, request_id=request_id)
            restarted = LockClient(alice_host, USER_IDS[0], LEDGER_CHAIN, trusted)  # not recorded: the same op
            assert await restarted.acquire(b"retried", 60_000, request_id=request_id) == first
            assert (await alice.acquire(b"next", 60_000)).token == first.token + 1  # the retry took no token
            for _ in range(20):  # the outcome itself, proven once the block after its decision is certified
                height, proven_first = await alice.proven_outcome(request_id)
                if proven_first is not None:
                    break
                await nodes[0].consensus.wait_for_height(nodes[0].ledger.state.height + 1)
            assert proven_first == first and height >= first.height
            # Two clients of one identity: each finds its nonce used by the other, and signs again.
            twin = LockClient(alice_host, USER_IDS[0], LEDGER_CHAIN, trusted, history=history)
            assert (await twin.acquire(b"twin-1", 60_000)).ok
            assert (await alice.acquire(b"twin-2", 60_000)).ok
            assert (await twin.acquire(b"twin-3", 60_000)).ok

        with pytest.raises(TtlOutOfRange):
            await alice.acquire(NAME, -1)  # refused before anything is sent

    # Offline: the kept answer and the validator set the client trusts are all it takes.
    proven = verify_lock_answer(answer, NAME, LEDGER_CHAIN, trusted)
    assert proven.lease == Lease(loser.sender, taken.token, taken.expiry)
    shown = describe_lock(proven)
    assert (shown["held"], shown["holder"], shown["token"]) == (True, str(loser.identity.peer_id), taken.token)
    assert describe_outcome(lost) == {"ok": False, "outcome": "held", "reason": "held by another lease",
                                      "token": won.token, "expiry_ms": won.expiry,
                                      "holder": str(winner.identity.peer_id), "height": lost.height,
                                      "time_ms": lost.time}
    tampered = bytearray(answer)
    tampered[-100] ^= 1
    with pytest.raises(QueryError):
        verify_lock_answer(bytes(tampered), NAME, LEDGER_CHAIN, trusted)
    assert check_lock_history(history).ok is True
    assert not lease_overlaps(history)
