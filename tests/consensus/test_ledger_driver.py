"""The ledger on real hosts: four validators over QUIC on loopback, SQLite stores, the trio consensus driver."""

import contextlib

import trio

from hypermesh.consensus.driver import ConsensusService
from hypermesh.consensus.ledger import Ledger
from hypermesh.consensus.ledger_tx import Transfer, sign_transaction
from hypermesh.consensus.sqlite_store import SqliteConsensusStore
from hypermesh.consensus.tendermint import TendermintConfig, TendermintCore
from hypermesh.transport.host import open_host
from ledger_testkit import BALANCE, LEDGER_CHAIN, USER_IDS, VALIDATOR_IDS, key, make_genesis

CONFIG = TendermintConfig(timeout_propose=1.0, timeout_prevote=0.5, timeout_precommit=0.5, timeout_delta=0.5,
                          rebroadcast_interval=0.5)
# Loopback answers in milliseconds; this only bounds a hung test.
STEP = 60


@contextlib.asynccontextmanager
async def ledger_network(tmp_path, genesis):
    """The genesis validators, each a host with a ledger, a SQLite store and a consensus service."""
    identities = VALIDATOR_IDS[:4]
    async with contextlib.AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(open_host(i, ["/ip4/127.0.0.1/udp/0/quic-v1"])) for i in identities]
        for host in hosts:
            for other in hosts:
                if other is not host:
                    host.peerstore.add_addrs(other.peer_id, other.listen_addrs())
        services = []
        for index, (host, identity) in enumerate(zip(hosts, identities)):
            store = SqliteConsensusStore(tmp_path / f"v{index}")
            stack.callback(store.close)
            ledger = Ledger(genesis)
            service = ConsensusService(host, TendermintCore(LEDGER_CHAIN, ledger.validators, identity, ledger, store,
                                                            CONFIG))
            # What the node does with equivocation the core detects: pool it for the next proposals.
            service.on_evidence.append(lambda event, ledger=ledger: ledger.add_evidence(event.evidence))
            services.append(service)
        nursery = await stack.enter_async_context(trio.open_nursery())
        for service in services:
            await nursery.start(service.run)
        yield services
        nursery.cancel_scope.cancel()


async def test_four_validators_on_real_hosts_commit_a_transfer_to_the_same_state_root(tmp_path):
    for index in range(4):
        (tmp_path / f"v{index}").mkdir()
    genesis = make_genesis()
    alice, bob = USER_IDS[0], USER_IDS[1]
    async with ledger_network(tmp_path, genesis) as services:
        transfer = sign_transaction(alice, LEDGER_CHAIN, 0, Transfer(key(bob), 1_234))
        for service in services:
            service.core.app.submit(transfer.encode())
        with trio.fail_after(STEP):
            while True:
                decision = await services[0].wait_for_height(len(services[0].committed) + 1)
                if services[0].core.app.state.nonce(key(alice)) == 1:
                    break
            for service in services:
                await service.wait_for_height(decision.height)
        roots = {service.core.app.roots[decision.height] for service in services}
        assert len(roots) == 1
        state = services[1].core.app.state
        assert (state.balance(key(alice)), state.balance(key(bob))) == (BALANCE - 1_234, BALANCE + 1_234)
