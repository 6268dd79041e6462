"""Ledger bench: state sync against replay for a late node, and transfers per second through consensus.

Prints one JSON object.

- ``state_sync_seconds`` / ``replay_seconds``: a chain of ``--blocks``
  certified blocks (each with ``--transfers`` signed transfers among
  ``--accounts`` accounts, certified by 4 validators) is built once; a fresh
  node then either replays every block from genesis (checking each block's
  certificate and transactions) or restores the snapshot of the last-but-one
  height (chunks hashed, root checked against the certified root) and
  executes the last block. Both end at the same state root.
- ``state_sync_over_quic_seconds``: the same restore by a late node over the
  network: it dials a node serving that snapshot (``/hm/state-sync/1.0.0``,
  QUIC on ``[::1]``, two hosts in this process) and fetches the offer and
  every chunk, verifies them and executes the certified block. Replay is
  timed locally, without the network: a lower bound for catching up by blocks.
- ``transfers_per_second``: end to end on 4 validators on real hosts in one
  process (QUIC on loopback, SQLite stores, ``run_ledger_node``): a client
  sends every transfer to one validator over ``/hm/ledger-tx`` (32 at a
  time), which relays them; the clock runs from the first send to the last transfer committed.
- ``transfers_per_second_simulated_network``: the same 4 validators' work in
  the deterministic simulator (in-process, virtual network): the CPU cost of
  consensus + signature checks + execution alone.

    python bench/ledger.py [--quick] [--blocks N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import check, machine  # noqa: E402

from hypermesh.consensus.genesis import Genesis, GenesisBond, LedgerParams  # noqa: E402
from hypermesh.consensus.ledger import Ledger, certified_root  # noqa: E402
from hypermesh.consensus.ledger_node import run_ledger_node  # noqa: E402
from hypermesh.consensus.ledger_service import send_transaction  # noqa: E402
from hypermesh.consensus.ledger_tx import Role, Transfer, sign_transaction  # noqa: E402
from hypermesh.consensus.sim import SIM_CHAIN, ConsensusSim, sim_identities  # noqa: E402
from hypermesh.consensus.snapshot import SnapshotRestorer, make_snapshot  # noqa: E402
from hypermesh.consensus.state_sync import SnapshotServer, fetch_snapshot  # noqa: E402
from hypermesh.consensus.validators import public_key_of  # noqa: E402
from hypermesh.consensus.wire import Commit, Kind, block_id_of, make_certificate, sign_vote  # noqa: E402
from hypermesh.transport.host import open_host  # noqa: E402
from hypermesh.transport.identity import Identity  # noqa: E402

CHAIN_ID = "bench-ledger"
# The client's transfers on their way at once (one stream each).
SUBMISSIONS_IN_FLIGHT = 32
STAKE = 10_000


def build_chain(blocks: int, transfers: int, accounts: int) -> tuple[Genesis, list[Commit], Ledger]:
    """A certified chain (real validator keys sign every commit, no network), and the ledger that built it."""
    validators = [Identity.from_seed(b"bench-validator-%d" % i) for i in range(4)]
    users = [Identity.from_seed(b"bench-user-%d" % i) for i in range(accounts)]
    genesis = Genesis(CHAIN_ID, LedgerParams(), {public_key_of(u): 10**12 for u in users},
                      tuple(GenesisBond(public_key_of(v), Role.VALIDATOR, STAKE) for v in validators))
    by_key = {public_key_of(v): v for v in validators}
    ledger = Ledger(genesis)
    commits = []
    for height in range(1, blocks + 1):
        for i in range(transfers):
            sender = users[(height * transfers + i) % accounts]
            receiver = users[(height * transfers + i + 1) % accounts]
            ledger.submit(sign_transaction(sender, CHAIN_ID, ledger.state.nonce(public_key_of(sender)),
                                           Transfer(public_key_of(receiver), 1)))
        value = ledger.propose(height)
        votes = [sign_vote(by_key[v.public_key], CHAIN_ID, Kind.PRECOMMIT, height, 0, block_id_of(value))
                 for v in ledger.validators.validators]
        commit = Commit(make_certificate(votes, ledger.validators), value)
        ledger.finalize(commit)
        commits.append(commit)
    return genesis, commits, ledger


def replay(genesis: Genesis, commits: list[Commit]) -> tuple[float, bytes]:
    started = time.perf_counter()
    ledger = Ledger(genesis)
    for commit in commits:
        ledger.apply_decided(commit.value, commit.certificate)
    return time.perf_counter() - started, ledger.state.root()


def state_sync(genesis: Genesis, commits: list[Commit], server: Ledger) -> tuple[float, bytes, int]:
    """``server`` decided every commit: it serves its state at the last-but-one height (the state its
    last decision certifies; the snapshot is made untimed), which the late node restores and then
    executes the last block."""
    state, _ = server.certified
    manifest, chunks = make_snapshot(state)
    started = time.perf_counter()
    height, root = certified_root(commits[-1], CHAIN_ID, state.validators)
    restorer = SnapshotRestorer(genesis, height, root, manifest)
    for index, chunk in enumerate(chunks):
        restorer.add_chunk(index, chunk)
    late = Ledger(genesis, state=restorer.finish())
    late.apply_decided(commits[-1].value, commits[-1].certificate)
    return time.perf_counter() - started, late.state.root(), len(chunks)


async def state_sync_on_hosts(genesis: Genesis, server: Ledger) -> tuple[float, bytes]:
    """A late node fetches ``server``'s certified snapshot over /hm/state-sync (QUIC on loopback, two hosts in
    this process): offer, every chunk, the root check and the certified block; the clock starts at the dial."""
    async with open_host(Identity.from_seed(b"bench-snapshot-server"), ["/ip6/::1/udp/0/quic-v1"]) as serving, \
            open_host(Identity.from_seed(b"bench-late-node"), ["/ip6/::1/udp/0/quic-v1"]) as late:
        snapshots = SnapshotServer(serving, server)
        snapshots.offer_certified()  # made untimed, as a serving node makes it when the height is decided
        snapshots.start()
        late.peerstore.add_addrs(serving.peer_id, serving.listen_addrs())
        started = time.perf_counter()
        ledger, _ = await fetch_snapshot(late, serving.peer_id, genesis, Ledger(genesis).validators)
        return time.perf_counter() - started, ledger.state.root()


def transfers_per_second(transfers: int, accounts: int) -> dict:
    identities = sim_identities(1, 4)
    users = [Identity.from_seed(b"bench-user-%d" % i) for i in range(accounts)]
    genesis = Genesis(SIM_CHAIN, LedgerParams(), {public_key_of(u): 10**12 for u in users},
                      tuple(GenesisBond(public_key_of(i), Role.VALIDATOR, STAKE) for i in identities))
    sim = ConsensusSim(1, [STAKE] * 4, app_factory=lambda index, identity, rng: Ledger(genesis))
    txs = []
    for i in range(transfers):
        sender, receiver = users[i % accounts], users[(i + 1) % accounts]
        txs.append(sign_transaction(sender, SIM_CHAIN, i // accounts, Transfer(public_key_of(receiver), 1)))
    started = time.perf_counter()
    for node in sim.nodes:
        for tx in txs:
            node.app.submit(tx)
    sim.start()
    ledger = sim.nodes[0].app

    def all_committed() -> bool:
        return all(not n.app.mempool for n in sim.nodes)
    sim.run_until(600.0, stop=all_committed)
    seconds = time.perf_counter() - started
    committed = sum(ledger.state.nonce(public_key_of(u)) for u in users)
    return {"transfers": committed, "seconds": round(seconds, 3), "blocks": ledger.state.height,
            "per_second": round(committed / seconds, 1) if seconds else None}


async def transfers_on_hosts(transfers: int, accounts: int, data_dir: Path) -> dict:
    """Transfers/s end to end: 4 validators on real hosts (QUIC on loopback, SQLite stores), one
    process; a client sends every transfer to one validator over /hm/ledger-tx, which relays them."""
    validators = [Identity.from_seed(b"bench-host-validator-%d" % i) for i in range(4)]
    client_identity = Identity.from_seed(b"bench-host-client")
    users = [Identity.from_seed(b"bench-user-%d" % i) for i in range(accounts)]
    genesis = Genesis(CHAIN_ID, LedgerParams(), {public_key_of(u): 10**12 for u in users},
                      tuple(GenesisBond(public_key_of(v), Role.VALIDATOR, STAKE) for v in validators))
    txs = [sign_transaction(users[i % accounts], CHAIN_ID, i // accounts,
                            Transfer(public_key_of(users[(i + 1) % accounts]), 1)) for i in range(transfers)]
    async with contextlib.AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(open_host(i, ["/ip4/127.0.0.1/udp/0/quic-v1"]))
                 for i in validators + [client_identity]]
        for host in hosts:
            for other in hosts:
                if other is not host:
                    host.peerstore.add_addrs(other.peer_id, other.listen_addrs())
        nodes = []
        for index, (host, identity) in enumerate(zip(hosts, validators)):
            (data_dir / f"v{index}").mkdir()
            nodes.append(await stack.enter_async_context(run_ledger_node(host, genesis, identity, data_dir / f"v{index}")))
        started = time.perf_counter()
        in_flight = trio.CapacityLimiter(SUBMISSIONS_IN_FLIGHT)

        async def submit(tx) -> None:
            async with in_flight:
                await send_transaction(hosts[-1], hosts[0].peer_id, tx)
        async with trio.open_nursery() as nursery:
            for tx in txs:
                nursery.start_soon(submit, tx)
        ledger = nodes[0].ledger
        with trio.fail_after(600):
            while sum(ledger.state.nonce(public_key_of(u)) for u in users) < transfers:
                await nodes[0].consensus.wait_for_height(ledger.state.height + 1)
        seconds = time.perf_counter() - started
    return {"transfers": transfers, "seconds": round(seconds, 3), "blocks": ledger.state.height,
            "per_second": round(transfers / seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 300 blocks, 500 transfers")
    parser.add_argument("--blocks", type=int, default=None)
    parser.add_argument("--transfers", type=int, default=5, help="transfers per block of the synced chain")
    parser.add_argument("--accounts", type=int, default=200)
    args = parser.parse_args()
    blocks = args.blocks or (300 if args.quick else 10_000)
    started = time.perf_counter()
    genesis, commits, server = build_chain(blocks, args.transfers, args.accounts)
    built = time.perf_counter() - started
    replay_s, replay_root = replay(genesis, commits)
    sync_s, sync_root, chunk_count = state_sync(genesis, commits, server)
    quic_sync_s, quic_sync_root = trio.run(state_sync_on_hosts, genesis, server)
    throughput = transfers_per_second(500 if args.quick else 5_000, args.accounts)
    with tempfile.TemporaryDirectory() as data_dir:
        on_hosts = trio.run(transfers_on_hosts, 200 if args.quick else 2_000, args.accounts, Path(data_dir))
    checks = [
        check("state_sync_seconds", round(sync_s, 3), "s", "< replay", round(replay_s, 3),
              replay_s / sync_s if sync_s else None, sync_s < replay_s and sync_root == replay_root),
        check("state_sync_over_quic_seconds", round(quic_sync_s, 3), "s", "< replay", round(replay_s, 3),
              replay_s / quic_sync_s if quic_sync_s else None,
              quic_sync_s < replay_s and quic_sync_root == replay_root),
        check("transfers_per_second", on_hosts["per_second"], "transfers/s", None, met=True),
        check("transfers_per_second_simulated_network", throughput["per_second"], "transfers/s", None, met=True),
    ]
    print(json.dumps({
        "bench": "ledger", "quick": args.quick, "blocks": blocks, "transfers_per_block": args.transfers,
        "accounts": args.accounts, "chain_build_seconds": round(built, 1), "replay_seconds": round(replay_s, 3),
        "state_sync_seconds": round(sync_s, 3),
        "state_sync_over_quic_seconds": round(quic_sync_s, 3), "snapshot_chunks": chunk_count, "same_root": sync_root == replay_root,
        "throughput_on_hosts": on_hosts, "throughput_simulated_network": throughput, "checks": checks, "machine": machine(),
    }))


if __name__ == "__main__":
    main()
