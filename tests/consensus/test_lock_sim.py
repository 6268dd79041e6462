"""Locks on the consensus simulator: the ledger's block time is the simulator's virtual time."""

import random

from hypermesh.consensus.genesis import Genesis, GenesisBond, LedgerParams
from hypermesh.consensus.ledger import Ledger
from hypermesh.consensus.ledger_tx import LockAcquire, LockRelease, Role, sign_transaction
from hypermesh.consensus.linearizability import ACQUIRE, RELEASE, Operation, check_lock_history, lease_overlaps
from hypermesh.consensus.lock_client import lock_result
from hypermesh.consensus.sim import SIM_CHAIN, ConsensusSim, sim_identities
from ledger_testkit import BALANCE, STAKE, USER_IDS, key

NAME = b"sim-lock"
POLL = 0.02  # how often a simulated client looks for its outcome (virtual seconds)


class SimLockClient:
    """One client: one request at a time, put in every node's mempool; its answer read from node 0's state."""

    def __init__(self, sim, identity, history):
        self.sim, self.identity, self.history = sim, identity, history
        self.nonce, self.token, self.pending = 0, 0, None

    def send(self, rng):
        if self.pending is not None:
            return
        if self.token and rng.random() < 0.6:
            body, kind, ttl = LockRelease(rng.randbytes(16), NAME, self.token), RELEASE, None
        else:
            ttl = rng.randint(100, 600)
            body, kind = LockAcquire(rng.randbytes(16), NAME, ttl), ACQUIRE
        tx = sign_transaction(self.identity, SIM_CHAIN, self.nonce, body)
        self.nonce += 1
        for node in self.sim.nodes:
            node.app.submit(tx)
            self.sim.txs_available(node.index)
        self.pending = (body, kind, ttl, self.sim.now)
        self.sim.schedule(self.sim.now + POLL, self.poll)

    def poll(self):
        body, kind, ttl, invoked = self.pending
        outcome = self.sim.nodes[0].app.lock_outcome(key(self.identity), body.request_id)
        if outcome is None:
            self.sim.schedule(self.sim.now + POLL, self.poll)
            return
        if kind == ACQUIRE:
            self.token = outcome.token if outcome.ok else 0
        else:
            self.token = 0
        self.history.append(Operation(key(self.identity), kind, NAME, invoked, self.sim.now, lock_result(outcome),
                                      ttl, getattr(body, "token", 0)))
        self.pending = None


def test_lock_requests_on_the_simulator_are_linearizable_and_leases_expire_by_virtual_block_time():
    seed = 5
    validators = sim_identities(seed, 4)
    genesis = Genesis(SIM_CHAIN, LedgerParams(), {key(i): BALANCE for i in validators + USER_IDS[:3]},
                      tuple(GenesisBond(key(i), Role.VALIDATOR, STAKE) for i in validators))
    sim = ConsensusSim(seed, [STAKE] * 4,
                       app_factory=lambda index, identity, rng: Ledger(genesis, clock=lambda: sim.now))
    history = []
    clients = [SimLockClient(sim, identity, history) for identity in USER_IDS[:3]]
    rng = random.Random(seed)
    for step in range(40):
        sim.schedule(0.3 + step * 0.08, rng.choice(clients).send, rng)
    sim.start()
    sim.run_until(4.0)
    assert not sim.conflicts(), sim.describe()
    assert len(history) >= 30
    assert check_lock_history(history).ok is True
    assert not lease_overlaps(history)
    # Some lease ended by expiry alone: a later grant with no release of the lease before it.
    grants = sorted((op for op in history if op.kind == ACQUIRE and op.result.ok), key=lambda op: op.result.at)
    released = {op.token for op in history if op.kind == RELEASE and op.result.ok}
    assert any(earlier.result.token not in released and later.result.at >= earlier.result.expiry
               for earlier, later in zip(grants, grants[1:]))
    roots = {node.app.roots[9] for node in sim.nodes}
    assert len(roots) == 1
