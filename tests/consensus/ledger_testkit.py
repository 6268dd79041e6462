"""A genesis, identities, a chain driver (blocks certified without the network) and validators on real hosts."""

import contextlib

import trio

from hypermesh.consensus.driver import ConsensusService
from hypermesh.consensus.sqlite_store import SqliteConsensusStore
from hypermesh.consensus.tendermint import TendermintConfig, TendermintCore
from hypermesh.transport.host import open_host
from hypermesh.consensus.genesis import Genesis, GenesisBond, LedgerParams
from hypermesh.consensus.ledger import Block, Ledger
from hypermesh.consensus.ledger_tx import Role, sign_transaction
from hypermesh.consensus.validators import public_key_of
from hypermesh.consensus.wire import Commit, Kind, block_id_of, make_certificate, sign_vote
from hypermesh.transport.identity import Identity

LEDGER_CHAIN = "ledger-test"
VALIDATOR_IDS = [Identity.from_seed(b"ledger-validator-%d" % i) for i in range(7)]
USER_IDS = [Identity.from_seed(b"ledger-user-%d" % i) for i in range(4)]
STAKE = 10_000
BALANCE = 100_000


def key(identity):
    return public_key_of(identity)


def block_on(ledger: Ledger, height: int, parent_root: bytes, last_certificate=None, transactions=(),
             **fields) -> Block:
    """A block on ``ledger``'s chain with the header fields its proposer fills in (the validator set unchanged),
    for tests that build blocks by hand; ``fields`` override any of them."""
    same_set = ledger.validators.digest()
    header = {"chain_id": ledger.chain_id, "validators": same_set, "next_validators": same_set, **fields}
    return Block(height, parent_root, last_certificate, tuple(transactions), **header)


def make_genesis(validators=4, params=LedgerParams(), balance=BALANCE):
    everyone = VALIDATOR_IDS + USER_IDS
    return Genesis(LEDGER_CHAIN, params, {key(i): balance for i in everyone},
                   tuple(GenesisBond(key(i), Role.VALIDATOR, STAKE) for i in VALIDATOR_IDS[:validators]))


class Chain:
    """Ledgers of several nodes fed the same certified blocks; the proposer is the set's, as in consensus."""

    def __init__(self, genesis, nodes=1, signers=()):
        """``signers``: validators that sign with a consensus key of their own (the others with their identity)."""
        self.genesis = genesis
        self.ledgers = [Ledger(genesis) for _ in range(nodes)]
        self.genesis_validators = self.ledgers[0].validators.validators
        self.by_key = {key(i): i for i in VALIDATOR_IDS + USER_IDS}
        self.signers = {**self.by_key, **{signer.name: signer for signer in signers}}
        self.nonces = {}
        self.commits = []

    @property
    def ledger(self):
        return self.ledgers[0]

    def tx(self, identity, body):
        """A signed transaction with the sender's next nonce (counting those made but not yet applied)."""
        sender = key(identity)
        nonce = self.nonces.get(sender, self.ledger.state.nonce(sender))
        self.nonces[sender] = nonce + 1
        return sign_transaction(identity, LEDGER_CHAIN, nonce, body)

    def attempt(self, identity, body):
        """A signed transaction with the committed next nonce, not reserved (for transactions meant to fail)."""
        return sign_transaction(identity, LEDGER_CHAIN, self.ledger.state.nonce(key(identity)), body)

    def submit(self, *txs):
        for ledger in self.ledgers:
            for tx in txs:
                ledger.submit(tx)

    def commit_block(self, absent=()):
        """Propose, check on every node, certify with every validator not in ``absent``, finalize everywhere."""
        ledger = self.ledger
        height = ledger.state.height + 1
        value = ledger.propose(height)
        assert all(node.is_valid(height, value) for node in self.ledgers)
        validators = ledger.validators
        precommits = [sign_vote(self.signers[v.public_key], LEDGER_CHAIN, Kind.PRECOMMIT, height, 0, block_id_of(value))
                      for v in validators.validators if v.public_key not in absent]
        assert validators.is_quorum(sum(validators.power_of(p.validator) for p in precommits))
        commit = Commit(make_certificate(precommits, validators), value)
        self.commits.append(commit)
        changes = [node.finalize(commit) for node in self.ledgers]
        self.nonces = {}
        return changes[0]

    def run(self, *txs, **kwargs):
        self.submit(*txs)
        return self.commit_block(**kwargs)


CONFIG = TendermintConfig(timeout_propose=1.0, timeout_prevote=0.5, timeout_precommit=0.5, timeout_delta=0.5,
                          rebroadcast_interval=0.5)
# Loopback answers in milliseconds; this only bounds a hung test.
STEP = 60


@contextlib.asynccontextmanager
async def connected_hosts(identities):
    """Hosts on loopback that know each other's addresses."""
    async with contextlib.AsyncExitStack() as stack:
        hosts = [await stack.enter_async_context(open_host(i, ["/ip4/127.0.0.1/udp/0/quic-v1"])) for i in identities]
        for host in hosts:
            for other in hosts:
                if other is not host:
                    host.peerstore.add_addrs(other.peer_id, other.listen_addrs())
        yield hosts


def ledger_service(data_dir, host, genesis, identity, stack):
    """A consensus service (not started) on ``host`` with its own ledger and a SQLite store in ``data_dir``,
    closed by ``stack``; equivocation the core detects is pooled for the next proposals."""
    data_dir.mkdir()
    store = SqliteConsensusStore(data_dir)
    stack.callback(store.close)  # after the service has stopped
    ledger = Ledger(genesis)
    service = ConsensusService(host, TendermintCore(LEDGER_CHAIN, ledger.validators, identity, ledger, store, CONFIG))
    service.on_evidence.append(lambda event: ledger.add_evidence(event.evidence))
    return service


@contextlib.asynccontextmanager
async def ledger_network(tmp_path, genesis, extra_hosts=(), signers=()):
    """The genesis validators, each a host with a ledger, a SQLite store and a consensus service;
    ``extra_hosts`` (identities) get hosts that know them, without consensus; ``signers``: validators that
    sign with a consensus key of their own (the others with their identity)."""
    identities = VALIDATOR_IDS[:4]
    own_keys = {signer.name: signer for signer in signers}
    async with contextlib.AsyncExitStack() as stack:
        hosts = await stack.enter_async_context(connected_hosts(identities + list(extra_hosts)))
        services = [ledger_service(tmp_path / f"v{index}", host, genesis, own_keys.get(key(identity), identity), stack)
                    for index, (host, identity) in enumerate(zip(hosts[:len(identities)], identities))]
        nursery = await stack.enter_async_context(trio.open_nursery())
        for service in services:
            await nursery.start(service.run)
        yield services, hosts
        nursery.cancel_scope.cancel()
