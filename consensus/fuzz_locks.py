"""Lock clients on the consensus simulator: the chain's ledger as every node's application, and lock histories.

:func:`ledger_app_factory` makes each simulated node run the real
:class:`~hypermesh.consensus.ledger.Ledger` (block time from the simulator's
virtual clock, a few milliseconds of skew per node), with the validators
bonded at genesis with their simulated power. :class:`LockClients` are
clients that each issue one lock request at a time (acquire, renew or
release of a few shared names, sometimes with a stale token), hand the
signed transaction to every running node's mempool (what transaction gossip
achieves), re-send it until an honest node they ask has decided it, and
record each as an :class:`~hypermesh.consensus.linearizability.Operation`:
invoked when sent, completed when the client saw the decided outcome, with
that outcome (a request decided but not yet seen completes never). The
history must be linearizable and no two leases may overlap in block time.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from hypermesh.transport.identity import Identity

from .genesis import Genesis, GenesisBond, LedgerParams
from .ledger import Ledger
from .ledger_tx import LedgerError, LockAcquire, LockRelease, LockRenew, Role, Transaction, sign_transaction
from .linearizability import ACQUIRE, RELEASE, RENEW, Operation, check_lock_history, lease_overlaps
from .lock_client import lock_result
from .signing import ml_dsa_public_key
from .sim import SIM_CHAIN, ConsensusSim, SimValidator, sim_identities, sim_ml_dsa_key
from .validators import public_key_of

# Bonded stake per unit of simulated voting power (the ledger's minimum validator stake).
STAKE_UNIT = LedgerParams().min_validator_stake
BALANCE = 1_000_000
# Block time at virtual time 0 (ms since the Unix epoch).
EPOCH_MS = 1_800_000_000_000
MAX_CLOCK_SKEW_MS = 20
LOCK_NAMES = (b"alpha", b"beta")
# How often a waiting client asks its node, and re-sends its transaction.
POLL_INTERVAL = 0.02
RESEND_INTERVAL = 0.5


def lock_genesis(seed: int, powers: list[int], clients: list[Identity], ml_dsa: frozenset[int] = frozenset()) -> Genesis:
    """The validators bonded with ``powers`` (those in ``ml_dsa`` declaring their simulated ML-DSA-65 key)."""
    validators = sim_identities(seed, len(powers))
    balances = {public_key_of(i): BALANCE for i in validators + clients}
    bonds = tuple(GenesisBond(public_key_of(identity), Role.VALIDATOR, power * STAKE_UNIT,
                              ml_dsa_public_key(sim_ml_dsa_key(seed, i)) if i in ml_dsa else None)
                  for i, (identity, power) in enumerate(zip(validators, powers)) if power)
    return Genesis(SIM_CHAIN, LedgerParams(), balances, bonds)


def ledger_app_factory(genesis: Genesis, clock: Callable[[], float]) -> Callable:
    """``ConsensusSim``'s ``app_factory``: a Ledger per node on ``clock`` (virtual seconds) plus its skew."""
    def make(index: int, identity: Identity, rng: random.Random) -> Ledger:
        skew = rng.uniform(-MAX_CLOCK_SKEW_MS, MAX_CLOCK_SKEW_MS) / 1000
        return Ledger(genesis, clock=lambda: EPOCH_MS / 1000 + clock() + skew)
    return make


class _Client:
    __slots__ = ("identity", "key", "nonce", "tokens", "pending", "home")

    def __init__(self, identity: Identity):
        self.identity = identity
        self.key = public_key_of(identity)
        self.nonce = 0
        self.tokens: dict[bytes, int] = {}  # the token of the lease it last got, per name
        # (kind, body, tx, invoke time) of the request it waits for.
        self.pending: tuple[str, object, Transaction, float] | None = None
        self.home: SimValidator | None = None


class LockClients:
    """Clients issuing lock requests to a simulated chain of ledgers, and the history they observed."""

    def __init__(self, sim: ConsensusSim, identities: list[Identity], rng: random.Random):
        self.sim = sim
        self.rng = rng
        self.clients = [_Client(identity) for identity in identities]
        self.completed: list[Operation] = []
        self._requests = 0

    def start(self) -> None:
        for client in self.clients:
            self.sim.schedule(self.rng.uniform(0.0, 0.2), self._issue, client)

    # ------------------------------------------------------------ clients

    def _issue(self, client: _Client) -> None:
        name = self.rng.choice(LOCK_NAMES)
        token = client.tokens.get(name, 0)
        if self.rng.random() < 0.1:
            token += self.rng.choice((-1, 1))  # a stale or made-up token: must be refused
        request_id = self._request_id()
        ttl = self.rng.randint(20, 1_500)
        if not token or self.rng.random() < 0.4:
            kind, body = ACQUIRE, LockAcquire(request_id, name, ttl)
        elif self.rng.random() < 0.5:
            kind, body = RENEW, LockRenew(request_id, name, max(token, 1), ttl)
        else:
            kind, body = RELEASE, LockRelease(request_id, name, max(token, 1))
        tx = sign_transaction(client.identity, SIM_CHAIN, client.nonce, body)
        client.nonce += 1
        client.pending = (kind, body, tx, self.sim.now)
        client.home = self.rng.choice(self.sim.honest_nodes())
        self._send(tx)
        self.sim.schedule(self.sim.now + POLL_INTERVAL, self._poll, client, self.sim.now + RESEND_INTERVAL)

    def _poll(self, client: _Client, resend_at: float) -> None:
        kind, body, tx, invoke = client.pending
        outcome = client.home.app.lock_outcome(client.key, body.request_id)
        if outcome is None:
            if self.sim.now >= resend_at:
                self._send(tx)
                resend_at = self.sim.now + RESEND_INTERVAL
            self.sim.schedule(self.sim.now + POLL_INTERVAL, self._poll, client, resend_at)
            return
        if kind == ACQUIRE and outcome.ok:
            client.tokens[body.name] = outcome.token
        self.completed.append(self._operation(client, self.sim.now, outcome))
        client.pending = None
        self.sim.schedule(self.sim.now + self.rng.uniform(0.0, 0.05), self._issue, client)

    def _send(self, tx: Transaction) -> None:
        """To every running node's mempool: what gossip of transactions achieves."""
        for node in self.sim.nodes:
            if node.core is not None:
                try:
                    node.app.submit(tx)
                except LedgerError:
                    continue  # decided already, or this node is behind on the sender's nonce: others have it
                self.sim.txs_available(node.index)

    def _request_id(self) -> bytes:
        self._requests += 1
        return self._requests.to_bytes(16, "big")

    def _operation(self, client: _Client, complete: float | None, outcome) -> Operation:
        kind, body, _, invoke = client.pending
        return Operation(client.key, kind, body.name, invoke, complete, lock_result(outcome),
                         getattr(body, "ttl_ms", None), getattr(body, "token", 0))

    # ------------------------------------------------------------ checks

    def history(self) -> list[Operation]:
        """What the clients saw, and the requests decided that they had not seen yet (never completed)."""
        ahead = max(self.sim.honest_nodes(), key=lambda node: node.app.state.height).app
        unseen = []
        for client in self.clients:
            if client.pending is not None:
                outcome = ahead.lock_outcome(client.key, client.pending[1].request_id)
                if outcome is not None:
                    unseen.append(self._operation(client, None, outcome))
        return self.completed + unseen

    def violations(self) -> list[str]:
        history = self.history()
        found = []
        checked = check_lock_history(history)
        if checked.ok is False:
            found.append(f"the history of lock {checked.name!r} is not linearizable: {list(checked.operations)}")
        elif checked.ok is None:
            found.append(f"the linearizability search for lock {checked.name!r} ran out of steps")
        found += [f"leases overlap in block time: {a} and {b}" for a, b in lease_overlaps(history)]
        return found


def client_identities(seed: int, count: int) -> list[Identity]:
    return [Identity.from_seed(b"fuzz-client-%d-%d" % (seed, i)) for i in range(count)]


__all__ = ["LockClients", "STAKE_UNIT", "client_identities", "ledger_app_factory", "lock_genesis"]
