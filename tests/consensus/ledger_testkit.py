"""A genesis, identities and a chain driver for the ledger tests (blocks certified without the network)."""

from hypermesh.consensus.genesis import Genesis, GenesisBond, LedgerParams
from hypermesh.consensus.ledger import Ledger
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


def make_genesis(validators=4, params=LedgerParams(), balance=BALANCE):
    everyone = VALIDATOR_IDS + USER_IDS
    return Genesis(LEDGER_CHAIN, params, {key(i): balance for i in everyone},
                   tuple(GenesisBond(key(i), Role.VALIDATOR, STAKE) for i in VALIDATOR_IDS[:validators]))


class Chain:
    """Ledgers of several nodes fed the same certified blocks; the proposer is the set's, as in consensus."""

    def __init__(self, genesis, nodes=1):
        self.genesis = genesis
        self.ledgers = [Ledger(genesis) for _ in range(nodes)]
        self.genesis_validators = self.ledgers[0].validators.validators
        self.by_key = {key(i): i for i in VALIDATOR_IDS + USER_IDS}
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
        precommits = [sign_vote(self.by_key[v.public_key], LEDGER_CHAIN, Kind.PRECOMMIT, height, 0, block_id_of(value))
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
