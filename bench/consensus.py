"""Consensus bench: commit latency, transactions/s and lock latency on real validator processes, beside etcd.

Prints one JSON object. For n = 4 and n = 7 (``--sizes``), n validator
processes (this script with ``--validator-process``) each run the ledger
chain (``run_ledger_node``: SQLite store synced before each vote leaves, QUIC on
loopback, default Tendermint timeouts but an idle block every
``IDLE_BLOCK_INTERVAL``, so that the empty-block phase has blocks to measure); the bench process is a client on its
own host. Every validator prints, as JSON lines, when it proposed a height
and when it committed one (wall clock, one machine).

- ``commit_latency``: empty blocks, ``--seconds`` long: for every height and
  every validator, from the proposer's proposal to that validator's commit;
  ``commit_latency_split_ms`` splits it (heights decided in round 0): the
  proposal to the validator's prevote, synced (the proposer's own left
  out), to its precommit, synced, to its commit.
- ``transaction_latency``: one transfer at a time, sent to the validators in
  turn over ``/hm/ledger-tx``: from the send to the commit at the validator
  that took it.
- ``transactions_per_second``: ``--transactions`` pre-signed transfers from
  many accounts, in batches of ``--batch`` on one stream each
  (``/hm/ledger-txs``; 1 sends each on its own stream, ``/hm/ledger-tx``),
  ``--in-flight`` batches at a time, spread over the validators (which relay
  them to the others, batched too): from the first send until validator 0
  has committed them all; blocks batch whatever the mempool holds.
- ``lock``: one client (its own account) acquires a lock (``LockAcquire``,
  a fresh request ID) and releases it with the fencing token granted, one
  request at a time, each to the next validator: acquire is the send of the
  acquire to its commit at that validator (the granted outcome read from its
  ledger); acquire + release runs on to the commit of the release.
- ``ml_dsa_65`` (``--signing ml-dsa-65``), beside the Ed25519 figures: a
  second chain of n processes whose validators sign with ML-DSA-65
  consensus keys declared at genesis (as ``hypermesh genesis --validator
  PEER:POWER:ml-dsa-65=@FILE`` does), its empty-block phase only: commit
  latency, its split and CPU per block per validator process.
- ``etcd``: the anchor, in the same run: Debian's ``etcd`` as a 3-member
  cluster on loopback (fsync on, its default), a lock acquired and released
  through its v3 HTTP gateway (``/v3/lock/lock``, ``/v3/lock/unlock``) on one
  lease, as ``etcdctl lock`` does. Installed with apt-get when missing and
  the bench runs as root (``--no-install`` skips); otherwise skipped, with
  the reason.

    python bench/consensus.py [--quick] [--sizes 4,7] [--signing ml-dsa-65]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import check, machine, summary  # noqa: E402

from hypermesh.consensus.genesis import Genesis, GenesisBond, LedgerParams  # noqa: E402
from hypermesh.consensus.ledger import decode_block  # noqa: E402
from hypermesh.consensus.ledger_node import run_ledger_node  # noqa: E402
from hypermesh.consensus.ledger_service import TransactionRefused, send_transaction, send_transactions  # noqa: E402
from hypermesh.consensus.ledger_tx import LockAcquire, LockRelease, Role, Transfer, sign_transaction  # noqa: E402
from hypermesh.consensus.signing import Scheme, Signer, ml_dsa_key_from_seed, scheme_named  # noqa: E402
from hypermesh.consensus.sqlite_store import SqliteConsensusStore  # noqa: E402
from hypermesh.consensus.tendermint import TendermintConfig  # noqa: E402
from hypermesh.consensus.validators import public_key_of  # noqa: E402
from hypermesh.transport.errors import TransportError  # noqa: E402
from hypermesh.transport.host import open_host  # noqa: E402
from hypermesh.transport.identity import Identity  # noqa: E402

CHAIN_ID = "bench-consensus"
STAKE = 10_000
LISTEN = ["/ip4/127.0.0.1/udp/0/quic-v1"]
# Heights committed before anything is measured (connections are up by then).
WARM_UP_HEIGHTS = 3
LOCK_NAME = b"bench-lock"
LOCK_TTL_MS = 60_000
# Accounts: 0 sends the sequential transfers, 1 takes the lock, the rest (and 0) the throughput phase.
LOCK_ACCOUNT = 1
# A bounded wait for anything the chain should do in well under a second.
PHASE_TIMEOUT = 300
# An idle chain makes an empty block this often (the default, 1 s, would leave the empty-block phase a few
# blocks); transactions wake the proposer at once whatever it is.
IDLE_BLOCK_INTERVAL = 0.05


def validator_identity(index: int) -> Identity:
    return Identity.from_seed(b"bench-consensus-validator-%d" % index)


def user_identity(index: int) -> Identity:
    return Identity.from_seed(b"bench-consensus-user-%d" % index)


def validator_signer(index: int, scheme: Scheme) -> Signer:
    """What validator ``index`` signs consensus messages with: its identity, or also an ML-DSA-65 key (from a
    seed of the bench's, as its identity is)."""
    if scheme is Scheme.ED25519:
        return Signer(validator_identity(index))
    seed = hashlib.sha256(b"bench-consensus-ml-dsa-65-%d" % index).digest()
    return Signer(validator_identity(index), ml_dsa_key_from_seed(seed))


def make_genesis(validators: int, accounts: int, scheme: Scheme = Scheme.ED25519) -> Genesis:
    """Every validator with its consensus key declared, when it has one (``--validator PEER:POWER:ml-dsa-65=@FILE``
    in ``hypermesh genesis``)."""
    signers = [validator_signer(i, scheme) for i in range(validators)]
    return Genesis(CHAIN_ID, LedgerParams(), {public_key_of(user_identity(i)): 10**12 for i in range(accounts)},
                   tuple(GenesisBond(signer.name, Role.VALIDATOR, STAKE, consensus_key=signer.consensus_key)
                         for signer in signers))


# ------------------------------------------------------------ validator process

def _emit(record: dict) -> None:
    sys.stdout.write(json.dumps(record) + "\n")
    sys.stdout.flush()


class SigningTimes:
    """Prints when the node's store saved (synced) each vote its core signed: the vote leaves right after.
    With the proposal and commit times, they split a height's latency into its steps."""

    def __init__(self):
        self._emitted = None

    def __call__(self, state) -> None:
        height, round_, step = state.last_signed
        if step > 0 and (height, round_, step) != self._emitted:
            self._emitted = (height, round_, step)
            _emit({"signed": height, "round": round_, "step": step, "t": time.time()})


async def run_validator_process(index: int, validators: int, accounts: int, data_dir: Path,
                                scheme: Scheme = Scheme.ED25519) -> None:
    """One validator: prints its addresses, reads everyone's (one JSON line on stdin), runs until killed."""
    genesis = make_genesis(validators, accounts, scheme)
    identity = validator_identity(index)
    async with open_host(identity, LISTEN) as host:
        _emit({"addrs": host.listen_addrs()})
        line = await trio.to_thread.run_sync(sys.stdin.readline)
        for other, addrs in enumerate(json.loads(line)):
            if other != index:
                host.peerstore.add_addrs(validator_identity(other).peer_id, addrs)
        def open_store(directory):
            return SqliteConsensusStore(directory, on_saved=SigningTimes())
        config = TendermintConfig(idle_block_interval=IDLE_BLOCK_INTERVAL)
        async with run_ledger_node(host, genesis, validator_signer(index, scheme), data_dir, config=config,
                                   open_store=open_store) as node:
            propose = node.ledger.propose

            def timed_propose(height: int) -> bytes:
                _emit({"proposed": height, "t": time.time()})
                return propose(height)
            node.ledger.propose = timed_propose

            def on_commit(event) -> None:
                block = node.ledger.last_block  # decoded by the ledger; parsing it again here cost the chain
                transactions = (block if block is not None and block.height == event.height
                                else decode_block(event.value)).transactions
                tokens = {}
                for tx in transactions[:16]:
                    if isinstance(tx.body, LockAcquire):
                        outcome = node.ledger.lock_outcome(tx.sender, tx.body.request_id)
                        tokens[tx.tx_id().hex()] = outcome.token if outcome is not None and outcome.ok else None
                _emit({"committed": event.height, "round": event.round, "t": time.time(), "cpu": time.process_time(),
                       "txs": len(transactions), "ids": [tx.tx_id().hex() for tx in transactions[:16]],
                       "tokens": tokens})
            node.consensus.on_commit.append(on_commit)
            await trio.sleep_forever()


# ------------------------------------------------------------ the chain, seen by the bench

class ValidatorProcesses:
    """n validator processes and what they print: proposal times, commits (time, transaction IDs) per node."""

    def __init__(self, validators: int, accounts: int, data_dir: Path, scheme: Scheme = Scheme.ED25519):
        self.validators = validators
        self.accounts = accounts
        self.data_dir = data_dir
        self.scheme = scheme
        self.proposed: dict[int, float] = {}
        self.proposer: dict[int, int] = {}  # height -> the index of the validator that proposed first
        self.commits: list[dict[int, dict]] = [{} for _ in range(validators)]
        self.committed_ids: list[dict[str, float]] = [{} for _ in range(validators)]
        self.tokens: dict[str, int | None] = {}  # acquire transaction ID -> fencing token granted
        # Per node: (height, step) -> when it signed its round-0 prevote (1) and precommit (2) there.
        self.signed: list[dict[tuple[int, int], float]] = [{} for _ in range(validators)]
        self._changed = trio.Event()
        self.addrs: list[list[str]] = []

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            processes = []
            for index in range(self.validators):
                (self.data_dir / f"v{index}").mkdir()
                command = [sys.executable, __file__, "--validator-process", str(index), str(self.validators),
                           str(self.accounts), str(self.data_dir / f"v{index}"), self.scheme.label]
                process = await trio.lowlevel.open_process(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
                processes.append(process)
            try:
                lines = [self._lines(p.stdout) for p in processes]
                self.addrs = [json.loads(await lines[i].__anext__())["addrs"] for i in range(self.validators)]
                everyone = (json.dumps(self.addrs) + "\n").encode()
                for process in processes:
                    await process.stdin.send_all(everyone)
                for index, stream in enumerate(lines):
                    nursery.start_soon(self._follow, index, stream)
                task_status.started()
                await trio.sleep_forever()
            finally:
                for process in processes:
                    process.kill()
                with trio.CancelScope(shield=True):
                    for process in processes:
                        await process.wait()

    @staticmethod
    async def _lines(stream):
        buffer = b""
        while True:
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                yield line
            data = await stream.receive_some(65536)
            if not data:
                return
            buffer += data

    async def _follow(self, index: int, lines) -> None:
        async for line in lines:
            record = json.loads(line)
            if "proposed" in record:
                if record["proposed"] not in self.proposed:
                    self.proposed[record["proposed"]] = record["t"]
                    self.proposer[record["proposed"]] = index
            elif "signed" in record:
                if record["round"] == 0:
                    self.signed[index][(record["signed"], record["step"])] = record["t"]
            elif "committed" in record:
                self.commits[index][record["committed"]] = record
                for tx_id in record["ids"]:
                    self.committed_ids[index][tx_id] = record["t"]
                self.tokens.update(record["tokens"])
            self._changed.set()
            self._changed = trio.Event()

    def height(self, index: int = 0) -> int:
        return max(self.commits[index], default=0)

    async def wait_until(self, condition) -> None:
        with trio.fail_after(PHASE_TIMEOUT):
            while not condition():
                await self._changed.wait()

    def cpu_ms_per_block(self, first: int, last: int) -> float | None:
        """CPU time a validator process spent per block between heights first and last (median over validators):
        what bounds the pace when n processes share the machine's cores."""
        per_validator = sorted((c[last]["cpu"] - c[first]["cpu"]) * 1000 / (last - first)
                               for c in self.commits if first in c and last in c and last > first)
        return round(per_validator[len(per_validator) // 2], 2) if per_validator else None

    def latency_split_ms(self, first: int, last: int) -> dict:
        """Heights first..last decided in round 0, per validator: proposal → its prevote signed (the proposal
        reaches it and is checked), → its precommit signed (prevotes of a quorum reach it), → its commit
        (precommits of a quorum reach it; the block is executed)."""
        steps = {"proposal_to_prevote": [], "prevote_to_precommit": [], "precommit_to_commit": []}
        for index, (signed, commits) in enumerate(zip(self.signed, self.commits)):
            for h in range(first, last + 1):
                times = (self.proposed.get(h), signed.get((h, 1)), signed.get((h, 2)),
                         commits[h]["t"] if h in commits and commits[h]["round"] == 0 else None)
                if None not in times:
                    for name, (a, b) in zip(steps, zip(times, times[1:])):
                        if name != "proposal_to_prevote" or self.proposer.get(h) != index:  # its own: at once
                            steps[name].append((b - a) * 1000)
        return {name: summary(values) for name, values in steps.items()}

    def commit_latencies_ms(self, first: int, last: int) -> list[float]:
        """Proposal to commit, per validator, for heights first..last that went through round 0 or later."""
        return [(commits[h]["t"] - self.proposed[h]) * 1000 for commits in self.commits
                for h in range(first, last + 1) if h in commits and h in self.proposed]


async def empty_blocks(chain: ValidatorProcesses, seconds: float) -> dict:
    """The chain's own pace for ``seconds``, once every validator has committed the warm-up heights."""
    await chain.wait_until(lambda: all(chain.height(i) >= WARM_UP_HEIGHTS for i in range(chain.validators)))
    first = chain.height() + 1
    started = time.time()
    await trio.sleep(seconds)
    last = chain.height()
    return {"empty_blocks": {"heights": last - first + 1, "seconds": round(time.time() - started, 2)},
            "commit_latency_ms": summary(chain.commit_latencies_ms(first, last)),
            "cpu_ms_per_block_per_validator": chain.cpu_ms_per_block(first, last),
            "commit_latency_split_ms": chain.latency_split_ms(first, last)}


async def measure_chain(validators: int, accounts: int, seconds: float, sequential: int, transactions: int,
                        batch: int, in_flight: int) -> dict:
    with tempfile.TemporaryDirectory() as directory:
        chain = ValidatorProcesses(validators, accounts, Path(directory))
        async with trio.open_nursery() as nursery:
            await nursery.start(chain.run)
            async with open_host(Identity.from_seed(b"bench-consensus-client"), LISTEN) as client:
                peers = [validator_identity(i).peer_id for i in range(validators)]
                for peer, addrs in zip(peers, chain.addrs):
                    client.peerstore.add_addrs(peer, addrs)
                result = {"validators": validators, **await empty_blocks(chain, seconds)}
                result["transaction_latency_ms"] = summary(
                    await transaction_latencies(chain, client, peers, sequential))
                result["lock"] = await lock_latencies(chain, client, peers, sequential)
                result["throughput"] = await throughput(chain, client, peers, transactions, batch, in_flight, sequential)
            nursery.cancel_scope.cancel()
    return result


async def measure_signing_scheme(validators: int, accounts: int, seconds: float, scheme: Scheme) -> dict:
    """The empty-block phase of a chain whose validators all sign with ``scheme``."""
    with tempfile.TemporaryDirectory() as directory:
        chain = ValidatorProcesses(validators, accounts, Path(directory), scheme)
        async with trio.open_nursery() as nursery:
            await nursery.start(chain.run)
            result = {"validators": validators, "signing": scheme.label, **await empty_blocks(chain, seconds)}
            nursery.cancel_scope.cancel()
    return result


def signed_transfers(count: int, accounts: int, first_nonce: int = 0) -> list:
    """``count`` transfers, round robin over the accounts, with consecutive nonces per account."""
    users = [user_identity(i) for i in range(accounts)]
    return [sign_transaction(users[i % accounts], CHAIN_ID, first_nonce + i // accounts,
                             Transfer(public_key_of(users[(i + 1) % accounts]), 1)) for i in range(count)]


async def committed_at(chain: ValidatorProcesses, client, peer_index: int, peers, tx) -> float:
    """Send ``tx`` to validator ``peer_index``; when that validator committed it (wall clock)."""
    tx_id = tx.tx_id().hex()
    await send_transaction(client, peers[peer_index], tx)
    await chain.wait_until(lambda: tx_id in chain.committed_ids[peer_index])
    return chain.committed_ids[peer_index][tx_id]


async def transaction_latencies(chain: ValidatorProcesses, client, peers, count: int) -> list[float]:
    """One transfer at a time (account 0's nonces 0..count-1), each to the next validator: send to commit there."""
    latencies = []
    for i, tx in enumerate(signed_transfers(count, 1)):
        sent = time.time()
        latencies.append((await committed_at(chain, client, i % len(peers), peers, tx) - sent) * 1000)
    return latencies


async def lock_latencies(chain: ValidatorProcesses, client, peers, rounds: int) -> dict:
    """Acquire, then release with the token granted, ``rounds`` times; each request to the next validator."""
    holder = user_identity(LOCK_ACCOUNT)
    acquire, both = [], []
    nonce = 0
    for i in range(rounds):
        request = os.urandom(16)
        tx = sign_transaction(holder, CHAIN_ID, nonce, LockAcquire(request, LOCK_NAME, LOCK_TTL_MS))
        started = time.time()
        acquired = await committed_at(chain, client, (2 * i) % len(peers), peers, tx)
        token = chain.tokens.get(tx.tx_id().hex())
        if token is None:
            return {"measured": False, "reason": f"acquire {i} was not granted"}
        release = sign_transaction(holder, CHAIN_ID, nonce + 1, LockRelease(os.urandom(16), LOCK_NAME, token))
        released = await committed_at(chain, client, (2 * i + 1) % len(peers), peers, release)
        nonce += 2
        acquire.append((acquired - started) * 1000)
        both.append((released - started) * 1000)
    return {"measured": True, "rounds": rounds, "acquire_ms": summary(acquire), "acquire_release_ms": summary(both)}


async def throughput(chain: ValidatorProcesses, client, peers, count: int, batch: int, in_flight: int,
                     skip: int) -> dict:
    """``count`` transfers (account 0 skips the ``skip`` nonces the latency phase used, the lock account
    takes no part), spread over the validators."""
    txs = signed_transfers(count + skip + count // chain.accounts + 1, chain.accounts)
    txs = [tx for i, tx in enumerate(txs) if i % chain.accounts != LOCK_ACCOUNT
           and not (i % chain.accounts == 0 and i // chain.accounts < skip)]
    txs = txs[:count]
    before = sum(c["txs"] for c in chain.commits[0].values())
    limiter = trio.CapacityLimiter(in_flight)
    refused = []

    async def submit(i: int, group: list) -> None:
        async with limiter:
            try:
                if len(group) == 1:
                    await send_transaction(client, peers[i % len(peers)], group[0])
                    return
                answers = await send_transactions(client, peers[i % len(peers)], group)
                refused.extend(str(a) for a in answers if isinstance(a, TransactionRefused))
            except (TransactionRefused, TransportError) as exc:
                refused.extend([str(exc)] * len(group))
    started = time.time()
    async with trio.open_nursery() as nursery:
        for i in range(0, len(txs), batch):
            nursery.start_soon(submit, i // batch, txs[i:i + batch])
    sent = time.time()
    expected = before + len(txs) - len(refused)
    await chain.wait_until(lambda: sum(c["txs"] for c in chain.commits[0].values()) >= expected)
    seconds = max(c["t"] for c in chain.commits[0].values()) - started
    blocks = [c["txs"] for c in chain.commits[0].values() if c["t"] >= started]
    return {"transactions": len(txs) - len(refused), "refused": len(refused), "refusals": refused[:3],
            "batch": batch, "in_flight": in_flight, "send_seconds": round(sent - started, 3), "seconds": round(seconds, 3),
            "per_second": round((len(txs) - len(refused)) / seconds, 1), "blocks": len(blocks),
            "largest_block": max(blocks, default=0)}


# ------------------------------------------------------------ etcd

def etcd_available(install: bool) -> str | None:
    """None if etcd and etcdctl are there (installing them if allowed), else why not."""
    if shutil.which("etcd"):
        return None
    if not install:
        return "etcd is not installed (--no-install)"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "etcd is not installed and this is not a root shell with apt-get (apt-get install etcd-server etcd-client)"
    print("bench: installing Debian's etcd-server and etcd-client with apt-get for the etcd anchor", file=sys.stderr)
    result = subprocess.run(["apt-get", "install", "-y", "etcd-server", "etcd-client"], capture_output=True, text=True)
    if result.returncode != 0 or not shutil.which("etcd"):
        return f"apt-get install etcd-server etcd-client failed: {result.stderr.strip()[-300:]}"
    return None


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


@contextlib.contextmanager
def etcd_cluster(data_dir: Path, members: int = 3):
    """A ``members``-node etcd cluster on loopback; yields the client URLs."""
    ports = _free_ports(2 * members)
    clients = [f"http://127.0.0.1:{p}" for p in ports[:members]]
    peers = [f"http://127.0.0.1:{p}" for p in ports[members:]]
    cluster = ",".join(f"m{i}={peers[i]}" for i in range(members))
    processes = []
    try:
        for i in range(members):
            processes.append(subprocess.Popen(
                ["etcd", "--name", f"m{i}", "--data-dir", str(data_dir / f"m{i}"),
                 "--listen-client-urls", clients[i], "--advertise-client-urls", clients[i],
                 "--listen-peer-urls", peers[i], "--initial-advertise-peer-urls", peers[i],
                 "--initial-cluster", cluster, "--initial-cluster-state", "new",
                 "--initial-cluster-token", "bench-consensus"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 60
        while not all(_etcd_healthy(url) for url in clients):
            if time.monotonic() > deadline:
                raise RuntimeError("the etcd cluster did not become healthy within 60 s")
            time.sleep(0.2)
        yield clients
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait(timeout=30)


def _etcd_healthy(url: str) -> bool:
    try:
        return _etcd_call(url, "/health", None).get("health") == "true"
    except (OSError, ValueError, http.client.HTTPException):
        return False


def _etcd_call(url: str, path: str, body: dict | None, connection: http.client.HTTPConnection | None = None) -> dict:
    own = connection is None
    if own:
        host, port = url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        if body is None:
            connection.request("GET", path)
        else:
            connection.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        return json.loads(response.read() or b"{}")
    finally:
        if own:
            connection.close()


def measure_etcd(rounds: int) -> dict:
    """Acquire and acquire + release of one lock on a 3-member cluster, over one kept-alive HTTP connection."""
    with tempfile.TemporaryDirectory() as directory, etcd_cluster(Path(directory)) as clients:
        host, port = clients[0].removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        lease = _etcd_call(clients[0], "/v3/lease/grant", {"TTL": 60}, connection)["ID"]
        name = base64.b64encode(b"bench-lock").decode()
        acquire, both = [], []
        for _ in range(rounds):
            started = time.perf_counter()
            key = _etcd_call(clients[0], "/v3/lock/lock", {"name": name, "lease": lease}, connection)["key"]
            acquired = time.perf_counter()
            _etcd_call(clients[0], "/v3/lock/unlock", {"key": key}, connection)
            released = time.perf_counter()
            acquire.append((acquired - started) * 1000)
            both.append((released - started) * 1000)
        connection.close()
    return {"members": 3, "rounds": rounds, "acquire_ms": summary(acquire), "acquire_release_ms": summary(both),
            "version": subprocess.run(["etcd", "--version"], capture_output=True, text=True).stdout.split("\n")[0]}


# ------------------------------------------------------------ report

def chain_checks(result: dict) -> list[dict]:
    n = result["validators"]
    latency = result["commit_latency_ms"] or {}
    tps = result["throughput"]["per_second"]
    return [
        check(f"commit_latency_p50_ms_n{n}", latency.get("p50"), "ms", "<= 15", met=(latency.get("p50") or 1e9) <= 15),
        check(f"commit_latency_p99_ms_n{n}", latency.get("p99"), "ms", "<= 50", met=(latency.get("p99") or 1e9) <= 50),
        check(f"transactions_per_second_n{n}", tps, "transactions/s", ">= 2000", met=tps >= 2000),
        check(f"transaction_latency_p50_ms_n{n}", (result["transaction_latency_ms"] or {}).get("p50"), "ms", None,
              met=True),
    ]


def signing_checks(result: dict) -> list[dict]:
    """A chain signing with another scheme: figures beside the Ed25519 chain's, no target of their own."""
    n, label = result["validators"], result["signing"].replace("-", "_")
    latency = result["commit_latency_ms"] or {}
    return [check(f"commit_latency_{p}_ms_n{n}_{label}", latency.get(p), "ms", None, met=True) for p in ("p50", "p99")] \
        + [check(f"cpu_ms_per_block_per_validator_n{n}_{label}", result["cpu_ms_per_block_per_validator"], "ms", None,
                 met=True)]


def lock_checks(n: int, lock: dict, etcd: dict | None) -> list[dict]:
    """Ours against etcd's p50, as a ratio (within 3x is met); without etcd, ours alone (not met: no anchor)."""
    checks = []
    for name, field in (("lock_acquire", "acquire_ms"), ("lock_acquire_release", "acquire_release_ms")):
        ours = (lock.get(field) or {}).get("p50")
        theirs = ((etcd or {}).get(field) or {}).get("p50")
        ratio = ours / theirs if ours is not None and theirs else None
        checks.append(check(f"{name}_p50_ms_n{n}", ours, "ms", "<= 3x etcd", theirs, ratio,
                            met=ratio is not None and ratio <= 3))
    return checks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: n = 4 only, short phases")
    parser.add_argument("--sizes", default=None, help="validator counts, comma-separated (default 4,7; quick: 4)")
    parser.add_argument("--seconds", type=float, default=None, help="the empty-block phase (default 20; quick 3)")
    parser.add_argument("--transactions", type=int, default=None, help="default 10,000; quick 300")
    parser.add_argument("--rounds", type=int, default=None,
                        help="sequential transfers, and lock acquire/release rounds (default 50; quick 10)")
    parser.add_argument("--batch", type=int, default=100, help="transactions per submission (at most 256)")
    parser.add_argument("--in-flight", type=int, default=8, help="submissions on their way at once")
    parser.add_argument("--accounts", type=int, default=200)
    parser.add_argument("--no-install", action="store_true", help="never apt-get install etcd")
    parser.add_argument("--no-etcd", action="store_true", help="skip the etcd anchor")
    parser.add_argument("--signing", choices=[Scheme.ML_DSA_65.label], action="append", default=[],
                        help="also run the empty-block phase on a chain whose validators sign with this scheme "
                             "(figures beside the Ed25519 chain's)")
    parser.add_argument("--validator-process", nargs=5, metavar=("INDEX", "N", "ACCOUNTS", "DATA_DIR", "SCHEME"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.validator_process:
        index, validators, accounts, data_dir, scheme = args.validator_process
        trio.run(run_validator_process, int(index), int(validators), int(accounts), Path(data_dir),
                 scheme_named(scheme))
        return
    sizes = [int(s) for s in (args.sizes or ("4" if args.quick else "4,7")).split(",")]
    seconds = args.seconds or (3.0 if args.quick else 20.0)
    transactions = args.transactions or (300 if args.quick else 10_000)
    sequential = args.rounds or (10 if args.quick else 50)
    etcd, etcd_skipped = None, None
    if args.no_etcd:
        etcd_skipped = "--no-etcd"
    else:
        etcd_skipped = etcd_available(not args.no_install)
        if etcd_skipped is None:
            try:
                etcd = measure_etcd(50 if args.quick else 500)
            except (OSError, RuntimeError, KeyError, ValueError, http.client.HTTPException) as exc:
                etcd_skipped = f"etcd failed: {type(exc).__name__}: {exc}"
    results, checks = [], []
    for n in sizes:
        result = trio.run(measure_chain, n, args.accounts, seconds, sequential, transactions, args.batch,
                          args.in_flight)
        checks += chain_checks(result) + lock_checks(n, result["lock"], etcd)
        for label in dict.fromkeys(args.signing):
            other = trio.run(measure_signing_scheme, n, args.accounts, seconds, scheme_named(label))
            result[label.replace("-", "_")] = other
            checks += signing_checks(other)
        results.append(result)
    print(json.dumps({
        "bench": "consensus", "quick": args.quick, "sizes": sizes, "empty_block_seconds": seconds, "rounds": sequential,
        "transactions": transactions, "batch": args.batch, "in_flight": args.in_flight, "accounts": args.accounts,
        "signing": ["ed25519", *dict.fromkeys(args.signing)],
        "app": "ledger (run_ledger_node: SQLite store synced before each vote leaves, default Tendermint timeouts, "
               f"idle_block_interval {IDLE_BLOCK_INTERVAL} s)",
        "chains": results, "etcd": etcd if etcd is not None else {"skipped": etcd_skipped},
        "checks": checks, "machine": machine(), "load_average": os.getloadavg(),
    }))


if __name__ == "__main__":
    main()
