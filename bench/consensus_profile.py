"""Where a block's time goes: n validators in one process, under cProfile, CPU split by component.

Prints one JSON object. n validators (``run_ledger_node``: SQLite stores
synced before each vote leaves, QUIC on loopback, default Tendermint timeouts
but an idle block every ``IDLE_BLOCK_INTERVAL``, as in bench/consensus.py) run as
tasks of one trio run; after a warm-up, two phases are profiled apart:

- ``empty``: ``--heights`` heights of empty blocks;
- ``transactions``: ``--transactions`` signed transfers submitted to the
  validators in turn (``Ledger.submit`` directly, as the transaction service
  would), until every validator has committed them all.

For each phase: CPU milliseconds per height per validator (``process_time``,
so other processes' load is left out; cProfile itself inflates the Python
parts, so read the shares, not the absolute figures), split by component
(each function's own time goes to the component its file belongs to; a
built-in call, such as a hash or an Ed25519 check, goes to its caller's,
except Ed25519 verification and signing, counted apart); per height per
validator, how many Ed25519 verifications and signatures ran, how many state
roots were built, how many store writes there were and how many of them
waited for the disk (``fsync``), with the wall time they took. ``--no-profile``
gives the same run without cProfile: CPU per height as it is.

    python bench/consensus_profile.py [--validators 4] [--heights 100] [--transactions 2000]
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import machine  # noqa: E402

from hypermesh.consensus.genesis import Genesis, GenesisBond, LedgerParams  # noqa: E402
from hypermesh.consensus.ledger_node import run_ledger_node  # noqa: E402
from hypermesh.consensus.ledger_tx import Role, Transfer, sign_transaction  # noqa: E402
from hypermesh.consensus.sqlite_store import SqliteConsensusStore  # noqa: E402
from hypermesh.consensus.tendermint import TendermintConfig  # noqa: E402
from hypermesh.consensus.validators import public_key_of  # noqa: E402
from hypermesh.transport.host import open_host  # noqa: E402
from hypermesh.transport.identity import Identity  # noqa: E402

CHAIN_ID = "bench-profile"
LISTEN = ["/ip4/127.0.0.1/udp/0/quic-v1"]
WARM_UP_HEIGHTS = 3
PHASE_TIMEOUT = 600
# As bench/consensus.py: with the default (1 s) an empty height here took a second, idle timers and
# re-sends included, and its CPU per height was not comparable with that bench's (50 ms).
IDLE_BLOCK_INTERVAL = 0.05

# Component of a function's own time, by the path of its file (first match).
COMPONENTS = [
    ("aioquic/", "QUIC (aioquic)"),
    ("hypermesh/transport/", "transport (ours)"),
    ("transport/", "transport (ours)"),
    ("trio/", "trio"),
    ("outcome/", "trio"),
    ("consensus/merkle.py", "state root (Merkle)"),
    ("consensus/tendermint.py", "consensus core"),
    ("consensus/wire.py", "consensus codec"),
    ("consensus/driver.py", "consensus driver"),
    ("consensus/sqlite_store.py", "store (SQLite)"),
    ("consensus/ledger_service.py", "transaction service"),
    ("consensus/one_shot.py", "transaction service"),
    ("consensus/", "ledger"),
    ("hypermesh/", "other (ours)"),
]
# Functions of the ledger that are state-root work (the entries the tree is built over).
ROOT_FUNCTIONS = {"entries", "root", "tree"}


def component(func: tuple) -> str | None:
    filename, _, name = func
    if filename == "~":
        if "Ed25519PublicKey" in name and "verify" in name:
            return "Ed25519 verify"
        if "Ed25519PrivateKey" in name and "sign" in name:
            return "Ed25519 sign"
        return None  # a built-in: its caller's
    path = filename.replace("\\", "/")
    if path.endswith("consensus/ledger.py") and name in ROOT_FUNCTIONS or path.endswith("consensus/locks.py") \
            and name == "entries":
        return "state root (Merkle)"
    for fragment, label in COMPONENTS:
        if fragment in path:
            return label
    return "other"


def breakdown(stats: pstats.Stats) -> dict[str, float]:
    """Seconds of own time per component (built-ins split over their callers)."""
    totals: Counter = Counter()
    for func, (_, _, own, _, callers) in stats.stats.items():
        label = component(func)
        if label is not None:
            totals[label] += own
            continue
        caller_own = sum(c[2] for c in callers.values())
        if not callers or caller_own == 0:
            totals["other"] += own
            continue
        for caller, entry in callers.items():
            totals[component(caller) or "other"] += own * entry[2] / caller_own
    return totals


def call_count(stats: pstats.Stats, predicate) -> int:
    return sum(entry[1] for func, entry in stats.stats.items() if predicate(func))


class CountingStore(SqliteConsensusStore):
    """The node's store, counting writes, those that waited for the disk, and their wall time."""

    writes = 0
    synced = 0
    seconds = 0.0
    _depth = 0

    def _write(self, method, *args) -> None:
        before = self.synced_writes
        started = time.perf_counter()
        self._depth += 1
        try:
            method(*args)
        finally:
            self._depth -= 1
        if self._depth == 0:
            CountingStore.seconds += time.perf_counter() - started
            CountingStore.writes += 1
            CountingStore.synced += self.synced_writes - before

    def save_state(self, state) -> None:
        self._write(super().save_state, state)

    def save_commit(self, commit, state=None) -> None:
        self._write(super().save_commit, commit, state)


def identity(kind: str, index: int) -> Identity:
    return Identity.from_seed(b"bench-profile-%s-%d" % (kind.encode(), index))


async def run(validators: int, heights: int, transactions: int, accounts: int, profile: bool, data_dir: Path,
              dump: str | None = None) -> dict:
    users = [identity("user", i) for i in range(accounts)]
    genesis = Genesis(CHAIN_ID, LedgerParams(), {public_key_of(u): 10**12 for u in users},
                      tuple(GenesisBond(public_key_of(identity("validator", i)), Role.VALIDATOR, 10_000)
                            for i in range(validators)))
    txs = [sign_transaction(users[i % accounts], CHAIN_ID, i // accounts,
                            Transfer(public_key_of(users[(i + 1) % accounts]), 1)).encode()
           for i in range(transactions)]
    result = {}
    async with trio.open_nursery() as nursery:
        hosts = []
        for i in range(validators):
            hosts.append(await nursery.start(_host, identity("validator", i)))
        for host in hosts:
            for other in hosts:
                if other is not host:
                    host.peerstore.add_addrs(other.peer_id, other.listen_addrs())
        nodes = []
        for i, host in enumerate(hosts):
            (data_dir / f"v{i}").mkdir()
            nodes.append(await nursery.start(_node, host, genesis, identity("validator", i), data_dir / f"v{i}"))
        services = [node.consensus for node in nodes]

        async def reach(height: int) -> None:
            with trio.fail_after(PHASE_TIMEOUT):
                for service in services:
                    await service.wait_for_height(height)

        def height() -> int:
            return min(node.ledger.state.height for node in nodes)

        await reach(WARM_UP_HEIGHTS)

        async def phase(name: str, work) -> None:
            first = height()
            CountingStore.writes = CountingStore.synced = 0
            CountingStore.seconds = 0.0
            profiler = cProfile.Profile(time.process_time) if profile else None
            cpu, wall = time.process_time(), time.perf_counter()
            if profiler:
                profiler.enable()
            await work()
            if profiler:
                profiler.disable()
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            per = max(height() - first, 1) * validators
            entry = {"heights": height() - first, "wall_seconds": round(wall, 3),
                     "cpu_ms_per_height_per_validator": round(cpu * 1000 / per, 3),
                     "store_writes": round(CountingStore.writes / per, 2),
                     "store_synced_writes": round(CountingStore.synced / per, 2),
                     "store_write_ms": round(CountingStore.seconds * 1000 / per, 3)}
            if profiler:
                stats = pstats.Stats(profiler)
                if dump:
                    stats.dump_stats(f"{dump}.{name}")
                parts = breakdown(stats)
                total = sum(parts.values())
                entry["profiled_cpu_ms_per_height_per_validator"] = round(total * 1000 / per, 3)
                entry["components_ms"] = {k: round(v * 1000 / per, 3) for k, v in parts.most_common()}
                entry["components_share"] = {k: round(v / total, 3) for k, v in parts.most_common()}
                entry["per_height_per_validator"] = {
                    "ed25519_verify": round(call_count(stats, lambda f: component(f) == "Ed25519 verify") / per, 2),
                    "ed25519_sign": round(call_count(stats, lambda f: component(f) == "Ed25519 sign") / per, 2),
                    "state_roots_built": round(call_count(
                        stats, lambda f: f[0].endswith("merkle.py") and f[2] == "__init__") / per, 2),
                    "leaf_hashes": round(call_count(
                        stats, lambda f: f[0].endswith("merkle.py") and f[2] == "leaf_hash") / per, 2),
                }
            result[name] = entry

        async def empty() -> None:
            await reach(height() + heights)

        async def loaded() -> None:
            for i, data in enumerate(txs):
                nodes[i % validators].transactions.accept(data)
            with trio.fail_after(PHASE_TIMEOUT):
                while any(len(node.ledger.mempool) for node in nodes):
                    await services[0].wait_for_height(nodes[0].ledger.state.height + 1)
            await reach(max(node.ledger.state.height for node in nodes))

        await phase("empty", empty)
        if transactions:
            await phase("transactions", loaded)
            result["transactions"]["transactions"] = transactions
        nursery.cancel_scope.cancel()
    return result


async def _host(ident: Identity, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with open_host(ident, LISTEN) as host:
        task_status.started(host)
        await trio.sleep_forever()


async def _node(host, genesis, ident, data_dir, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    async with run_ledger_node(host, genesis, ident, data_dir, open_store=CountingStore,
                               config=TendermintConfig(idle_block_interval=IDLE_BLOCK_INTERVAL)) as node:
        task_status.started(node)
        await trio.sleep_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validators", type=int, default=4)
    parser.add_argument("--heights", type=int, default=100, help="empty heights profiled")
    parser.add_argument("--transactions", type=int, default=2000, help="transfers in the second phase (0: none)")
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--no-profile", action="store_true", help="CPU per height without cProfile")
    parser.add_argument("--dump", help="also write each phase's pstats to DUMP.<phase>")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        result = trio.run(run, args.validators, args.heights, args.transactions, args.accounts,
                          not args.no_profile, Path(directory), args.dump)
    print(json.dumps({"bench": "consensus_profile", "validators": args.validators, "profiled": not args.no_profile,
                      **result, "machine": machine(), "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
