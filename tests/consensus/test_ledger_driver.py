"""The ledger on real hosts: four validators over QUIC on loopback, SQLite stores, the trio consensus driver."""

import pytest
import trio

from hypermesh.consensus.ledger_tx import Transfer, sign_transaction
from ledger_testkit import BALANCE, LEDGER_CHAIN, STEP, USER_IDS, key, ledger_network, ledger_service, make_genesis


async def test_four_validators_on_real_hosts_commit_a_transfer_to_the_same_state_root(tmp_path):
    genesis = make_genesis()
    alice, bob = USER_IDS[0], USER_IDS[1]
    async with ledger_network(tmp_path, genesis) as (services, _):
        transfer = sign_transaction(alice, LEDGER_CHAIN, 0, Transfer(key(bob), 1_234))
        for service in services:
            service.core.app.submit(transfer.encode())
        with trio.fail_after(STEP):
            ledger = services[0].core.app
            for _ in range(20):  # the transfer is in one of the next blocks
                decision = await services[0].wait_for_height(ledger.state.height + 1)
                if ledger.state.nonce(key(alice)) == 1:
                    break
            for service in services:
                await service.wait_for_height(decision.height)
        roots = {service.core.app.roots[decision.height] for service in services}
        assert len(roots) == 1
        state = services[1].core.app.state
        assert (state.balance(key(alice)), state.balance(key(bob))) == (BALANCE - 1_234, BALANCE + 1_234)


async def test_a_transaction_sent_to_a_non_validator_is_relayed_to_the_validators_and_committed(tmp_path):
    """And a forgery is refused with its reason."""
    from hypermesh.consensus.ledger import Ledger
    from hypermesh.consensus.ledger_service import TransactionRefused, TransactionService, send_transaction
    from hypermesh.transport.identity import Identity
    genesis = make_genesis()
    alice, bob = USER_IDS[0], USER_IDS[1]
    extra = [Identity.from_seed(b"client"), Identity.from_seed(b"gateway")]
    async with ledger_network(tmp_path, genesis, extra_hosts=extra) as (services, hosts):
        async with trio.open_nursery() as nursery:
            for service, host in zip(services, hosts):
                await nursery.start(TransactionService(host, service.core.app).run)
            client, entry = hosts[-2], hosts[-1]
            # A node outside the validator set (its ledger is not even following): it only relays.
            await nursery.start(TransactionService(entry, Ledger(genesis)).run)
            transfer = sign_transaction(alice, LEDGER_CHAIN, 0, Transfer(key(bob), 77))
            forged = sign_transaction(bob, LEDGER_CHAIN, 0, Transfer(key(bob), 77))
            with trio.fail_after(STEP):
                assert await send_transaction(client, entry.peer_id, transfer) == transfer.tx_id()
                with pytest.raises(TransactionRefused, match="ForgedSignature"):
                    await send_transaction(client, entry.peer_id, transfer.encode()[:-64] + forged.signature)
                ledgers = [service.core.app for service in services]
                for _ in range(20):  # whoever proposes has it: it is in one of the next blocks everywhere
                    await services[0].wait_for_height(ledgers[0].state.height + 1)
                    if ledgers[0].state.nonce(key(alice)) == 1:
                        break
                assert ledgers[0].state.balance(key(bob)) == BALANCE + 77
            nursery.cancel_scope.cancel()


async def test_a_client_that_trusts_only_the_validator_set_reads_a_proven_balance_over_quic(tmp_path):
    from hypermesh.consensus.ledger import Ledger
    from hypermesh.consensus.ledger_query import QueryService, query_account
    from hypermesh.transport.identity import Identity
    genesis = make_genesis()
    alice, bob = USER_IDS[0], USER_IDS[1]
    async with ledger_network(tmp_path, genesis, extra_hosts=[Identity.from_seed(b"reader")]) as (services, hosts):
        ledger = services[2].core.app
        QueryService(hosts[2], ledger).start()
        for service in services:
            service.core.app.submit(sign_transaction(alice, LEDGER_CHAIN, 0, Transfer(key(bob), 99)))
        trusted = Ledger(genesis).validators
        with trio.fail_after(STEP):
            for _ in range(20):  # the transfer is in a block, and that block's state is certified by the next
                await services[2].wait_for_height(ledger.state.height + 1)
                height, balance, nonce = await query_account(hosts[-1], hosts[2].peer_id, key(bob), LEDGER_CHAIN,
                                                             trusted)
                if balance == BALANCE + 99:
                    break
            assert (balance, nonce) == (BALANCE + 99, 0)
            unknown = await query_account(hosts[-1], hosts[2].peer_id, b"\x07" * 32, LEDGER_CHAIN, trusted)
            assert unknown[1:] == (0, 0)  # proven absent


# A few blocks on loopback take a second or two; this only bounds a hung test.
JOIN_STEP = 30


async def _run_until(service, done, blocks=40):
    """Wait, block by block (at most ``blocks``), until ``done()`` holds on ``service``'s node."""
    for _ in range(blocks):
        if done():
            return
        await service.wait_for_height(service.core.height)
    assert done()


async def test_a_node_outside_the_validator_set_follows_the_chain_to_the_same_state_root(tmp_path):
    import contextlib
    from hypermesh.transport.identity import Identity
    genesis = make_genesis()
    alice, bob = USER_IDS[0], USER_IDS[1]
    async with contextlib.AsyncExitStack() as stack:
        services, hosts = await stack.enter_async_context(
            ledger_network(tmp_path, genesis, extra_hosts=[Identity.from_seed(b"follower")]))
        follower = ledger_service(tmp_path / "follower", hosts[-1], genesis, None, stack)
        transfer = sign_transaction(alice, LEDGER_CHAIN, 0, Transfer(key(bob), 555))
        for service in services:
            service.core.app.submit(transfer)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(JOIN_STEP):
                await nursery.start(follower.run)
                await _run_until(services[0], lambda: services[0].core.app.state.nonce(key(alice)) == 1)
                height = services[0].core.app.state.height
                decision = await follower.wait_for_height(height)
            # Its certificate is the one a validator sent; validators may hold different quorums of the same block.
            assert decision.certificate.block_id == (await services[0].wait_for_height(height)).certificate.block_id
            assert follower.core.app.roots[height] == services[0].core.app.roots[height]
            assert follower.core.app.state.balance(key(bob)) == BALANCE + 555
            nursery.cancel_scope.cancel()


async def test_a_fifth_node_bonds_joins_the_set_at_the_next_epoch_and_its_votes_count(tmp_path):
    """And a validator that unbonds at the same time leaves: its connection is no longer protected."""
    import contextlib
    from hypermesh.consensus.genesis import LedgerParams
    from hypermesh.consensus.ledger_tx import Bond, Role, Unbond
    from ledger_testkit import VALIDATOR_IDS
    # With three times a genesis validator's stake the newcomer holds 3/7 of the power: no quorum
    # without it, so every block after the epoch boundary proves its votes count.
    genesis = make_genesis(params=LedgerParams(epoch_length=4, unbonding_period=600, max_evidence_age=500))
    newcomer = VALIDATOR_IDS[4]
    async with contextlib.AsyncExitStack() as stack:
        services, hosts = await stack.enter_async_context(ledger_network(tmp_path, genesis, extra_hosts=[newcomer]))
        joiner = ledger_service(tmp_path / "joiner", hosts[-1], genesis, newcomer, stack)
        leaver = VALIDATOR_IDS[0]
        bond = sign_transaction(newcomer, LEDGER_CHAIN, 0, Bond(Role.VALIDATOR, 3 * 10_000))
        unbond = sign_transaction(leaver, LEDGER_CHAIN, 0, Unbond(Role.VALIDATOR, 10_000))
        for service in services:
            service.core.app.submit(bond)
            service.core.app.submit(unbond)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(JOIN_STEP):
                await nursery.start(joiner.run)
                ledger = services[0].core.app
                await _run_until(services[0], lambda: ledger.validators.index_of(key(newcomer)) is not None)
                joined_at = ledger.state.height
                index = ledger.validators.index_of(key(newcomer))
                for height in (joined_at + 1, joined_at + 2):
                    decisions = [await service.wait_for_height(height) for service in services + [joiner]]
                    assert index in [i for i, _ in decisions[0].certificate.signatures]
                    assert len({d.certificate.block_id for d in decisions}) == 1
            assert len({s.core.app.roots[joined_at + 2] for s in services + [joiner]}) == 1
            assert ledger.validators.index_of(key(leaver)) is None
            protected = hosts[1].connection_manager.is_protected
            assert protected(newcomer.peer_id) and not protected(leaver.peer_id)
            nursery.cancel_scope.cancel()


async def test_a_batch_of_transactions_on_one_stream_is_answered_per_transaction_and_a_malformed_one_reset():
    from hypermesh.consensus.ledger import Ledger
    from hypermesh.consensus.ledger_service import (
        LEDGER_TX_BATCH_PROTOCOL, TransactionRefused, TransactionService, send_transactions)
    from hypermesh.consensus.one_shot import ask
    from hypermesh.transport.errors import StreamReset
    from hypermesh.transport.identity import Identity
    from ledger_testkit import connected_hosts
    genesis = make_genesis()
    alice, bob = USER_IDS[0], USER_IDS[1]
    ledger = Ledger(genesis)
    async with connected_hosts([Identity.from_seed(b"node"), Identity.from_seed(b"client")]) as (node, client):
        async with trio.open_nursery() as nursery:
            await nursery.start(TransactionService(node, ledger).run)
            first = sign_transaction(alice, LEDGER_CHAIN, 0, Transfer(key(bob), 1))
            second = sign_transaction(alice, LEDGER_CHAIN, 1, Transfer(key(bob), 2))
            forged = first.encode()[:-64] + sign_transaction(bob, LEDGER_CHAIN, 0, Transfer(key(bob), 1)).signature
            with trio.fail_after(STEP):
                answers = await send_transactions(client, node.peer_id, [first, forged, second])
                assert answers[0] == first.tx_id() and answers[2] == second.tx_id()
                assert isinstance(answers[1], TransactionRefused) and "ForgedSignature" in answers[1].reason
                assert set(ledger.mempool) == {first.tx_id(), second.tx_id()}
                with pytest.raises(StreamReset):  # says three, holds one: the stream is reset, the node goes on
                    await ask(client, node.peer_id, LEDGER_TX_BATCH_PROTOCOL,
                              b"\x00\x03" + len(first.encode()).to_bytes(4, "big") + first.encode(), 1024)
                assert (await send_transactions(client, node.peer_id, [first]))[0] == first.tx_id()  # held: same ID
            nursery.cancel_scope.cancel()
