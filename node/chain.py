"""The chain in a running node: ``hypermesh run --genesis FILE [--validator] [--state-sync]``.

A node given a genesis runs the ledger chain (consensus/ledger_node.py)
beside its transport, DHT, capsules and trust, with its data in
``<data dir>/chain/``: the consensus store (SQLite, WAL), the state a state
sync started from, and a copy of the genesis it was made with (a restart on
another genesis is refused instead of diverging). With ``--validator`` it
signs whenever the ledger puts it in the validator set, with its ML-DSA-65
consensus key if the data directory holds one (validator_key.py), else
with its identity key;
without, it follows the chain (verifying every commit certificate) and
answers queries. With ``--state-sync`` a node with no chain data starts from
a certified snapshot of a validator it is connected to, instead of replaying
every block from genesis.

Validators are named by peer ID only; the node finds the addresses of those
it is not connected to through the DHT.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from pathlib import Path

import trio

from hypermesh.consensus.genesis import Genesis, GenesisError, genesis_to_json, parse_genesis, peer_id_of
from hypermesh.consensus.ledger import Ledger
from hypermesh.consensus.ledger_node import BASE_STATE_FILE, LedgerNode, run_ledger_node
from hypermesh.consensus.signing import Signer
from hypermesh.consensus.sqlite_store import STORE_FILE_NAME, SqliteConsensusStore
from hypermesh.consensus.state_sync import StateSyncError
from hypermesh.consensus.snapshot import SnapshotError
from hypermesh.consensus.tendermint import EquivocationDetected, TendermintConfig
from hypermesh.consensus.wire import Kind
from hypermesh.transport.errors import TransportError
from hypermesh.transport.identity import PeerId
from hypermesh.trust.engine import Observation, Proof
from hypermesh.trust.service import TrustService

from .validator_key import ValidatorKeyError, load_ml_dsa_key

log = logging.getLogger("hypermesh.node")

CHAIN_DIR = "chain"
GENESIS_COPY = "genesis.json"
# How often the node looks up, through the DHT, validators it has no address for.
LOCATE_INTERVAL = 5.0
LOCATE_TIMEOUT = 10.0
# How long a --state-sync node waits for a connection to a validator before it replays from genesis.
STATE_SYNC_WAIT = 30.0
LOCATE_POLL = 0.5
DIAL_TIMEOUT = 3.0


class ChainSetupError(Exception):
    """The chain cannot start as configured; one line for the user."""


@dataclass(frozen=True)
class ChainOptions:
    genesis: Genesis
    validator: bool = False
    state_sync: bool = False
    config: TendermintConfig = TendermintConfig()
    snapshot_interval: int = 1_000
    # A validator's ML-DSA-65 consensus key (None: it signs with its identity key).
    ml_dsa_key: object = None


def chain_options(genesis_path: Path | None, validator: bool, state_sync: bool, timeout: float,
                  snapshot_interval: int, data_dir: Path | None = None) -> ChainOptions | None:
    """The chain a node runs from its settings (None without a genesis); ChainSetupError if they do not fit.
    A validator's ML-DSA-65 key is read from ``data_dir`` now, so that a broken key file stops the start."""
    if genesis_path is None:
        if validator or state_sync:
            raise ChainSetupError(f"{'--validator' if validator else '--state-sync'} needs --genesis FILE "
                                  "(the chain to run; `hypermesh genesis new` makes one)")
        return None
    try:
        ml_dsa_key = load_ml_dsa_key(data_dir) if validator and data_dir is not None else None
    except ValidatorKeyError as exc:
        raise ChainSetupError(f"consensus key: {exc}") from None
    return ChainOptions(read_genesis(genesis_path), validator, state_sync, consensus_timeouts(timeout),
                        snapshot_interval, ml_dsa_key)


def consensus_timeouts(timeout: float) -> TendermintConfig:
    """The core's timeouts from one figure: ``timeout`` for the first round's
    proposal and between re-sends; half of it for the vote steps and for each
    round's growth (the ratios of the core's defaults)."""
    return TendermintConfig(timeout_propose=timeout, timeout_prevote=timeout / 2, timeout_precommit=timeout / 2,
                            timeout_delta=timeout / 2, rebroadcast_interval=timeout)


def read_genesis(path: Path) -> Genesis:
    try:
        return parse_genesis(Path(path).read_bytes())
    except OSError as exc:
        raise ChainSetupError(f"cannot read the genesis file {path}: {exc.strerror}") from None
    except GenesisError as exc:
        raise ChainSetupError(f"genesis file {path}: {exc}") from None


def chain_dir(data_dir: Path) -> Path:
    return Path(data_dir) / CHAIN_DIR


def check_chain_dir(data_dir: Path, genesis: Genesis) -> None:
    """Refuse (ChainSetupError) a data directory that holds the chain of another genesis; changes nothing."""
    directory = chain_dir(data_dir)
    copy = directory / GENESIS_COPY
    if not copy.exists():
        return
    try:
        held = genesis_to_json(parse_genesis(copy.read_bytes()))
    except (OSError, GenesisError):
        held = None
    if held != genesis_to_json(genesis):
        raise ChainSetupError(f"{directory} holds the chain of another genesis; give that genesis, "
                              f"or move {directory} away to start this chain afresh")


def prepare_chain_dir(data_dir: Path, genesis: Genesis) -> Path:
    """The node's chain directory, made for ``genesis`` (ChainSetupError if it holds another chain)."""
    check_chain_dir(data_dir, genesis)
    directory = chain_dir(data_dir)
    directory.mkdir(mode=0o700, exist_ok=True)
    copy = directory / GENESIS_COPY
    if not copy.exists():
        copy.write_text(genesis_to_json(genesis) + "\n", encoding="utf-8")
    return directory


def has_chain_data(directory: Path) -> bool:
    """Whether the node decided (or synced to) a height of this chain before."""
    if (directory / BASE_STATE_FILE).exists():
        return True
    if not (directory / STORE_FILE_NAME).exists():
        return False
    store = SqliteConsensusStore(directory)
    try:
        return store.last_commit_height() > 0
    finally:
        store.close()


class NodeChain:
    """The chain part of a node: absent until started, then the running :class:`LedgerNode`."""

    def __init__(self, options: ChainOptions):
        self.options = options
        self.running: LedgerNode | None = None
        self.started = trio.Event()
        # How this node's chain began: "genesis", "store" (a restart) or "state sync from <peer>".
        self.origin = ""

    @property
    def genesis(self) -> Genesis:
        return self.options.genesis


async def serve_chain(node) -> None:
    """Run ``node.chain`` until cancelled (a task of ``hypermesh run``)."""
    async with open_chain(node, node.chain):
        await trio.sleep_forever()


@contextlib.asynccontextmanager
async def open_chain(node, chain: NodeChain):
    """Run ``chain`` on ``node`` until the block exits."""
    options = chain.options
    directory = prepare_chain_dir(node.data_dir, options.genesis)
    identity = Signer(node.identity, options.ml_dsa_key) if options.validator else None
    try:
        async with contextlib.AsyncExitStack() as stack:
            if has_chain_data(directory):
                chain.origin = "store"
                sources = []
            else:
                chain.origin = "genesis"
                sources = await _snapshot_sources(node, options.genesis) if options.state_sync else []
            ledger_node = await _enter_chain(stack, chain, node.host, identity, directory, sources)
            chain.running = ledger_node
            chain.started.set()
            ledger_node.consensus.on_commit.append(_stake_follower(node, ledger_node))
            on_evidence, on_misbehaviour = trust_listeners(node.trust)
            ledger_node.consensus.on_evidence.append(on_evidence)
            ledger_node.consensus.on_misbehaviour.append(on_misbehaviour)
            log.info("chain %s: %s at height %d (%s)", options.genesis.chain_id,
                     f"validator signing {identity.scheme.label}" if identity else "follower",
                     ledger_node.ledger.state.height, chain.origin)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_locate_validators, node, ledger_node)
                yield chain
                nursery.cancel_scope.cancel()
    finally:
        chain.running = None


async def _enter_chain(stack: contextlib.AsyncExitStack, chain: NodeChain, host, identity, directory: Path,
                       sources: list[PeerId]) -> LedgerNode:
    """The running chain: from the first of ``sources`` that gives a certified snapshot, else from
    genesis (or the store)."""
    options = chain.options

    def start(source: PeerId | None):
        return run_ledger_node(host, options.genesis, identity, directory, config=options.config,
                               snapshot_interval=options.snapshot_interval, state_sync_from=source)

    for source in sources:
        try:
            ledger_node = await stack.enter_async_context(start(source))
        except (StateSyncError, SnapshotError, TransportError) as exc:
            log.warning("state sync from %s failed: %s", source, exc)
            continue
        chain.origin = f"state sync from {source}"
        return ledger_node
    if sources:
        log.warning("no validator gave a snapshot: replaying the chain from genesis")
    return await stack.enter_async_context(start(None))


def _validator_peers(validators) -> list[PeerId]:
    return [peer_id_of(validator.public_key) for validator in validators.validators]


async def _snapshot_sources(node, genesis: Genesis) -> list[PeerId]:
    """The genesis validators this node reaches, waiting up to STATE_SYNC_WAIT for one."""
    validators = [peer for peer in _validator_peers(Ledger(genesis).validators) if peer != node.host.peer_id]
    reached: list[PeerId] = []
    with trio.move_on_after(STATE_SYNC_WAIT):
        while True:
            reached = [peer for peer in validators if await _reach(node, peer)]
            if reached:
                break
            await trio.sleep(LOCATE_POLL)  # the bootstrap connection may not be up yet
    if not reached:
        log.warning("state sync: no genesis validator reachable within %g s", STATE_SYNC_WAIT)
    return reached


async def _reach(node, peer: PeerId) -> bool:
    """Whether this node is (or now gets) connected to ``peer``, whose address the DHT may know."""
    if node.host.connections_to(peer):
        return True
    await _locate(node, [peer])
    if not node.host.peerstore.addrs(peer):
        return False
    with trio.move_on_after(DIAL_TIMEOUT):
        try:
            await node.host.connection_to(peer)
            return True
        except TransportError as exc:
            log.debug("state sync: cannot reach %s: %s", peer, exc)
    return False


async def _locate(node, peers: list[PeerId]) -> None:
    """Look up, through the DHT, the peers this node has neither a connection to nor an address for."""
    for peer in peers:
        if node.host.connections_to(peer) or node.host.peerstore.addrs(peer):
            continue
        with trio.move_on_after(LOCATE_TIMEOUT):
            await node.discovery.service.find_node(peer.multihash)


async def _locate_validators(node, ledger_node: LedgerNode) -> None:
    """Keep the current validators reachable: the consensus driver dials them by peer ID."""
    while True:
        peers = [peer for peer in _validator_peers(ledger_node.ledger.validators) if peer != node.host.peer_id]
        await _locate(node, peers)
        await trio.sleep(LOCATE_INTERVAL)


def trust_listeners(trust: TrustService):
    """The chain's verdicts on peers, for the trust engine: (on_evidence, on_misbehaviour) listeners.

    A double vote is proof anyone can check (the chain slashes and tombstones
    its signer), so it is shunned at once; a message the consensus core refused
    and blamed on its sender counts as a protocol violation.
    """
    def on_evidence(event: EquivocationDetected) -> None:
        vote = event.evidence.first
        what = "proposals" if vote.kind is Kind.PROPOSAL else "votes"
        trust.prove(peer_id_of(vote.validator), Proof.EQUIVOCATION,
                    f"two {what} at height {vote.height}, round {vote.round}")

    def on_misbehaviour(peer: PeerId, _error: Exception) -> None:
        trust.report(peer, Observation.PROTOCOL_VIOLATION)

    return on_evidence, on_misbehaviour


def _stake_follower(node, ledger_node: LedgerNode):
    """A commit listener giving the trust engine the ledger's bonded stake whenever it changes."""
    last: dict = {}

    def on_commit(_event) -> None:
        nonlocal last
        stake = ledger_node.ledger.bonded_stake()
        if stake != last:
            last = stake
            node.trust.engine.set_stake(stake)

    return on_commit
