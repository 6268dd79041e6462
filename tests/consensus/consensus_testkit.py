"""Validators, an application and message helpers shared by the consensus tests."""

from hypermesh.consensus.store import MemoryConsensusStore
from hypermesh.consensus.tendermint import Broadcast, TendermintConfig, TendermintCore
from hypermesh.consensus.validators import Validator, ValidatorSet, public_key_of
from hypermesh.consensus.wire import Kind, block_id_of, sign_proposal, sign_vote, signer_of
from hypermesh.transport.identity import Identity

CHAIN = "test-chain"
IDENTITIES = [Identity.from_seed(b"validator-%d" % i) for i in range(4)]
KEYS = [public_key_of(i) for i in IDENTITIES]
VALIDATORS = ValidatorSet([Validator(key, 1) for key in KEYS])
CONFIG = TendermintConfig(timeout_propose=1.0, timeout_prevote=0.5, timeout_precommit=0.5, timeout_delta=0.5,
                          rebroadcast_interval=10.0)


class CountingApp:
    """Proposes b"<name> h=<height> #<n>"; refuses values that start with b"bad"."""

    def __init__(self, name=b"app"):
        self.name = name
        self.proposed = 0

    def propose(self, height):
        self.proposed += 1
        return b"%s h=%d #%d" % (self.name, height, self.proposed)

    def is_valid(self, height, value):
        return not value.startswith(b"bad")


def identity_of(key):
    return IDENTITIES[KEYS.index(key)]


def proposer_of(height, round_):
    return identity_of(VALIDATORS.proposer(height, round_))


def proposal(height, round_, value, pol_round=-1):
    return sign_proposal(proposer_of(height, round_), CHAIN, height, round_, pol_round, value)


def votes(kind, height, round_, value, signers):
    block_id = None if value is None else block_id_of(value)
    return [sign_vote(s, CHAIN, kind, height, round_, block_id) for s in signers]


def new_core(identity, store=None, app=None, now=0.0):
    core = TendermintCore(CHAIN, VALIDATORS, identity, app or CountingApp(), store or MemoryConsensusStore(), CONFIG)
    core.start(now)
    return core


def feed(core, messages, now=0.0):
    """Deliver signed messages to the core, each as if from its signer."""
    for message in messages:
        core.handle_message(signer_of(message), message, now)


def broadcasts(core, kind=None):
    """The messages the core wants broadcast (of ``kind``, if given)."""
    out = [o.message for o in core.take_outbound() if isinstance(o, Broadcast)]
    if kind is not None:
        out = [m for m in out if getattr(m, "kind", Kind.PROPOSAL) == kind]
    return out
