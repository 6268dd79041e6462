"""The ledger on real hosts: four validators over QUIC on loopback, SQLite stores, the trio consensus driver."""

import pytest
import trio

from hypermesh.consensus.ledger_tx import Transfer, sign_transaction
from ledger_testkit import BALANCE, LEDGER_CHAIN, STEP, USER_IDS, key, ledger_network, make_genesis


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
