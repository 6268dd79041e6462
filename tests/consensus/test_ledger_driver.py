"""The ledger on real hosts: four validators over QUIC on loopback, SQLite stores, the trio consensus driver."""

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
