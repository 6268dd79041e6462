"""run_ledger_node: the whole chain stack on real hosts; restart from the SQLite store; a late join by state sync."""

import contextlib

import trio

from hypermesh.consensus.ledger_node import run_ledger_node
from hypermesh.consensus.ledger_query import query_account
from hypermesh.consensus.ledger_service import send_transaction
from hypermesh.consensus.ledger_tx import Transfer, sign_transaction
from hypermesh.transport.identity import Identity
from ledger_testkit import BALANCE, CONFIG, LEDGER_CHAIN, STEP, USER_IDS, VALIDATOR_IDS, connected_hosts, key, make_genesis

LATE = Identity.from_seed(b"late-joiner")
CLIENT = Identity.from_seed(b"node-client")
SNAPSHOT_INTERVAL = 4


async def test_validators_restart_from_their_stores_and_a_late_node_joins_by_state_sync_and_restarts(tmp_path):
    genesis = make_genesis()
    alice, bob = USER_IDS[0], USER_IDS[1]
    validators = VALIDATOR_IDS[:4]
    for name in ("v0", "v1", "v2", "v3", "late"):
        (tmp_path / name).mkdir()

    def start(host, identity, name, **options):
        return run_ledger_node(host, genesis, identity, tmp_path / name, config=CONFIG,
                               snapshot_interval=SNAPSHOT_INTERVAL, **options)

    async with connected_hosts(validators + [LATE, CLIENT]) as hosts, contextlib.AsyncExitStack() as stack:
        others = {i: await stack.enter_async_context(start(hosts[i], validators[i], f"v{i}")) for i in (0, 1, 3)}
        client = hosts[-1]
        trusted = others[0].ledger.validators
        with trio.fail_after(STEP):
            async with start(hosts[2], validators[2], "v2") as second:
                await send_transaction(client, hosts[3].peer_id,
                                       sign_transaction(alice, LEDGER_CHAIN, 0, Transfer(key(bob), 500)))
                for _ in range(20):  # proven as soon as a block after the transfer's is decided
                    await second.consensus.wait_for_height(second.ledger.state.height + 1)
                    _, balance, _ = await query_account(client, hosts[2].peer_id, key(bob), LEDGER_CHAIN, trusted)
                    if balance == BALANCE + 500:
                        break
                assert balance == BALANCE + 500
                stopped_at = second.ledger.state.height
            # Three of four go on; the fourth restarts from its store and catches up with them.
            await others[0].consensus.wait_for_height(stopped_at + 2)
            async with start(hosts[2], validators[2], "v2") as restarted:
                assert restarted.ledger.state.height >= stopped_at  # rebuilt from the decisions on disk
                target = others[0].ledger.state.height + 2
                await restarted.consensus.wait_for_height(target)
                await others[0].consensus.wait_for_height(target)  # under load it may be the one behind
                assert restarted.ledger.roots[target] == others[0].ledger.roots[target]
            # A node that was not there joins from a validator's certified snapshot.
            async with start(hosts[4], None, "late", state_sync_from=hosts[0].peer_id) as late:
                height = late.ledger.state.height
                assert height >= SNAPSHOT_INTERVAL + 1
                assert late.ledger.roots[height] == others[0].ledger.roots[height]
                assert late.ledger.state.balance(key(bob)) == BALANCE + 500
            # It restarts from the state it synced (kept on disk) and the decisions after it.
            async with start(hosts[4], None, "late") as again:
                assert again.ledger.state.height >= height
                assert again.ledger.roots[height] == others[0].ledger.roots[height]
