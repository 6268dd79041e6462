"""A deterministic simulator: the real consensus core on an in-memory network.

Virtual time; seeded delay, loss and duplication (loss, long delays and
flapping links only before the global stabilisation time, GST); partitions
that heal; crashes and restarts from the saved signer state, also right
after a decision; Byzantine validators that stay silent, forge or
equivocate; a scripted adversary (:attr:`ConsensusSim.drop`) for exact
schedules. The other Byzantine behaviours (:class:`Behaviour`) each attack
one thing: votes, proposals, validity, freshness or delivery; a schedule may
mix them. Nothing here touches a socket or a clock, so a run is a pure
function of its seed, and a failing seed replays exactly.

Every message crosses the network as bytes, through the canonical encoder and
the strict decoder, as it does between real nodes.

An *equivocating* validator runs an honest core but signs with its key
outside the core's guard: each vote it sends goes, per recipient, either as
the core made it or for another block of the same height and round (one the
coalition has seen proposed), and every proposal it receives it prevotes and
precommits at once; as proposer it sends different proposals to different
validators. It therefore both double-votes and double-proposes, which is
what a safety attack needs.
"""

from __future__ import annotations

import dataclasses
import enum
import heapq
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import hashlib

from hypermesh.transport.identity import Identity

from .store import MemoryConsensusStore
from .tendermint import Broadcast, Committed, EquivocationDetected, TendermintConfig, TendermintCore
from .signing import Signer, ml_dsa_key_from_seed
from .validators import Validator, ValidatorSet, public_key_of
from .wire import (
    Commit,
    Evidence,
    Kind,
    Message,
    Proposal,
    RejectedMessage,
    Vote,
    WireError,
    decode_message,
    encode_message,
    sign_proposal,
    sign_vote,
    signer_of,
)

SIM_CHAIN = "sim-chain"

# Timeouts a little above the simulated network's delays after GST. The
# commit wait is half the largest delay after GST (most late precommits still
# arrive; a height takes a few delays, so a schedule's partitions and crashes
# still fall in the middle of heights); an idle chain (an application with
# has_pending: the ledger) makes a block every 0.2 s, often enough for lock
# leases of 20 ms and more to expire by block time in a short run.
SIM_CONFIG = TendermintConfig(
    timeout_propose=0.3,
    timeout_prevote=0.1,
    timeout_precommit=0.1,
    timeout_delta=0.1,
    rebroadcast_interval=0.5,
    timeout_commit=0.01,
    idle_block_interval=0.2,
)


class Behaviour(enum.Enum):
    HONEST = "honest"
    SILENT = "silent"
    # Double-votes and, as proposer, double-proposes (see the module's docstring).
    EQUIVOCATE = "equivocate"
    # Only the votes: conflicting ones to some validators, and at once for every proposal it receives.
    DOUBLE_VOTE = "double-vote"
    # Only the proposals: as proposer, a different one to different validators.
    EQUIVOCATE_PROPOSAL = "equivocate-proposal"
    # As proposer: a value the application refuses, or a proof-of-lock round
    # with no polka behind it; it prevotes and precommits that block itself.
    INVALID_PROPOSAL = "invalid-proposal"
    # Sends its honest messages, to each recipient a quarter of them followed
    # by a copy with a broken signature, a malformed blob or the replay of an old message.
    FORGE = "forge"
    # Sends its honest messages, to each recipient a quarter of them followed
    # by an old message (any signer's) it sent or received before.
    REPLAY = "replay"
    # Sends each message it signs only to some validators (the same ones on
    # every re-send) and relays nothing: votes seen by some and not others.
    WITHHOLD = "withhold"


# What a Byzantine validator of a fuzzed schedule may do.
BYZANTINE_BEHAVIOURS = tuple(b for b in Behaviour if b is not Behaviour.HONEST)

# Messages a replaying or forging validator keeps to replay later.
ARCHIVE_SIZE = 256
# The share of a forging or replaying validator's messages followed by a bad copy or an old message
# (each of these makes honest nodes verify, and answer a replay from a decided height with commits).
BAD_COPY_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class NetworkConfig:
    min_delay: float = 0.002
    max_delay: float = 0.020
    # Before GST: each message is lost with this probability, or delayed up to pre_gst_max_delay.
    gst: float = 0.0
    loss: float = 0.0
    pre_gst_max_delay: float = 1.0
    # Before GST, if > 0: every this many seconds each directed link is cut
    # (with probability link_cut) or restored, so some validators hear a
    # round's votes and others do not: the schedules that test locks.
    flap_interval: float = 0.0
    link_cut: float = 0.3
    # Before GST: an honest validator that has just decided is killed with
    # this probability before its messages leave (so the others may not learn
    # of the decision from it), and restarts from its store after down_time.
    crash_on_commit: float = 0.0
    down_time: float = 1.0
    # At any time: a message is delivered twice with this probability.
    duplicate: float = 0.0


class SimApp:
    """Proposes distinct values; every node of a run agrees on validity (values from an evil proposer are valid too)."""

    def __init__(self, name: int, rng: random.Random):
        self.name = name
        self.rng = rng

    def propose(self, height: int) -> bytes:
        return b"h=%d by %d #%d" % (height, self.name, self.rng.getrandbits(32))

    def is_valid(self, height: int, value: bytes) -> bool:
        return value.startswith(b"h=%d " % height)


@dataclass(slots=True)
class SimValidator:
    index: int
    identity: Identity
    signer: Signer  # the identity, with its ML-DSA-65 key if the node signs with one
    key: bytes
    behaviour: Behaviour
    store: MemoryConsensusStore
    app: SimApp
    core: TendermintCore | None = None
    timer_at: float | None = None
    committed: dict[int, bytes] = field(default_factory=dict)
    commit_times: dict[int, float] = field(default_factory=dict)
    reverted: list[int] = field(default_factory=list)


class ConsensusSim:
    def __init__(
        self,
        seed: int,
        powers: list[int],
        *,
        byzantine: dict[int, Behaviour] | None = None,
        network: NetworkConfig = NetworkConfig(),
        config: TendermintConfig = SIM_CONFIG,
        core_class: type[TendermintCore] = TendermintCore,
        app_factory: Callable[[int, Identity, random.Random], object] | None = None,
        ml_dsa: frozenset[int] = frozenset(),
    ):
        """``powers[i]`` is node i's initial voting power (0: a follower, outside the initial set);
        ``app_factory`` makes each node's application (default :class:`SimApp`); the nodes in
        ``ml_dsa`` sign consensus messages with ML-DSA-65 (the others with Ed25519).

        ML-DSA signing is randomised (hedged, FIPS 204), so with ``ml_dsa`` the bytes of signatures
        differ between runs; what the simulator decides does not depend on them."""
        self.seed = seed
        self.core_class = core_class
        self.rng = random.Random(seed)
        self.network = network
        self.config = config
        self.now = 0.0
        identities = sim_identities(seed, len(powers))
        signers = [Signer(identity, sim_ml_dsa_key(seed, i) if i in ml_dsa else None)
                   for i, identity in enumerate(identities)]
        self.validator_set = ValidatorSet([Validator(s.name, p, s.consensus_key) for s, p in zip(signers, powers) if p])
        make_app = app_factory or (lambda index, identity, rng: SimApp(index, rng))
        byzantine = byzantine or {}
        self.nodes = [
            SimValidator(i, identity, signers[i], public_key_of(identity), byzantine.get(i, Behaviour.HONEST),
                         MemoryConsensusStore(), make_app(i, identity, random.Random(self.rng.getrandbits(64))))
            for i, identity in enumerate(identities)
        ]
        self.by_key = {node.key: node for node in self.nodes}
        self._queue: list[tuple[float, int, Callable, tuple]] = []
        self._sequence = itertools.count()
        self._groups: dict[int, int] | None = None
        self._cut_links: set[tuple[int, int]] = set()
        # A scripted adversary: (sender, receiver, message) -> drop it?
        self.drop: Callable[[SimValidator, SimValidator, Message], bool] | None = None
        self.rejected: Counter = Counter()
        self.evidence: list = []
        # Block IDs the Byzantine coalition has seen proposed, per (height, round).
        self._seen_blocks: dict[tuple[int, int], list[bytes]] = {}
        # Per forging or replaying validator: messages to replay later.
        self._archives: dict[int, list[bytes]] = {}
        # Per withholding validator: (kind, height, round) -> the indices it sends that message to.
        self._withheld_from: dict[tuple[int, Kind, int, int], frozenset[int]] = {}
        # A broadcast reaches n - 1 nodes: decoded once (messages are immutable).
        self._decoded: dict[bytes, Message | WireError] = {}
        self.trace: list[str] = []
        self._senders = {
            Behaviour.EQUIVOCATE: self._send_equivocating,
            Behaviour.DOUBLE_VOTE: self._send_equivocating,
            Behaviour.EQUIVOCATE_PROPOSAL: self._send_equivocating,
            Behaviour.INVALID_PROPOSAL: self._send_invalid_proposal,
            Behaviour.FORGE: self._send_forging,
            Behaviour.REPLAY: self._send_replaying,
            Behaviour.WITHHOLD: self._send_withholding,
        }

    # ------------------------------------------------------------- control

    def start(self) -> None:
        for node in self.nodes:
            if node.behaviour is not Behaviour.SILENT:
                self._boot(node)
        if self.network.flap_interval > 0:
            self._flap()

    def _flap(self) -> None:
        if self.now >= self.network.gst:
            self._cut_links = set()
            return
        count = len(self.nodes)
        self._cut_links = {(a, b) for a in range(count) for b in range(count)
                           if a != b and self.rng.random() < self.network.link_cut}
        self.schedule(self.now + self.network.flap_interval, self._flap)

    def _boot(self, node: SimValidator) -> None:
        # An application that changes the validator set knows the current one (after a restart too).
        validators = getattr(node.app, "validators", None) or self.validator_set
        node.core = self.core_class(SIM_CHAIN, validators, node.signer, node.app, node.store, self.config)
        node.timer_at = None
        node.core.start(self.now)
        self._sync(node)

    def crash(self, index: int) -> None:
        """``kill -9``: the core and everything in flight to it vanish; its store stays."""
        self.trace.append(f"{self.now:.3f} crash {index}")
        self.nodes[index].core = None

    def restart(self, index: int) -> None:
        self.trace.append(f"{self.now:.3f} restart {index}")
        self._boot(self.nodes[index])

    def txs_available(self, index: int) -> None:
        """Node ``index``'s application has new transactions (what a node's driver hears from its mempool)."""
        node = self.nodes[index]
        if node.core is not None:
            node.core.txs_available(self.now)
            self._sync(node)

    def partition(self, groups: list[list[int]]) -> None:
        """Messages cross no boundary between ``groups`` until :meth:`heal`."""
        self.trace.append(f"{self.now:.3f} partition {groups}")
        self._groups = {index: g for g, members in enumerate(groups) for index in members}

    def heal(self) -> None:
        self.trace.append(f"{self.now:.3f} heal")
        self._groups = None

    # ------------------------------------------------------------- running

    def schedule(self, at: float, callback: Callable, *args) -> None:
        heapq.heappush(self._queue, (at, next(self._sequence), callback, args))

    def run_until(self, end: float, stop: Callable[[], bool] | None = None, max_events: int = 2_000_000) -> None:
        for _ in range(max_events):
            if not self._queue or self._queue[0][0] > end:
                break
            at, _, callback, args = heapq.heappop(self._queue)
            self.now = max(self.now, at)
            callback(*args)
            if stop is not None and stop():
                return
        else:
            raise RuntimeError(f"more than {max_events} events before {end}")
        self.now = max(self.now, end)

    def run_until_height(self, height: int, limit: float) -> bool:
        """Run until every honest running validator has committed ``height``; False if ``limit`` passes first."""
        def reached() -> bool:
            return all(height in n.committed for n in self.honest_nodes() if n.core is not None)
        self.run_until(limit, stop=reached)
        return reached()

    # -------------------------------------------------------------- checks

    def honest_nodes(self) -> list[SimValidator]:
        return [n for n in self.nodes if n.behaviour is Behaviour.HONEST]

    def conflicts(self) -> dict[int, set[bytes]]:
        """Heights at which honest validators committed different values (must be empty)."""
        by_height: dict[int, set[bytes]] = {}
        for node in self.honest_nodes():
            for height, value in node.committed.items():
                by_height.setdefault(height, set()).add(value)
        return {h: values for h, values in by_height.items() if len(values) > 1}

    def min_honest_height(self) -> int:
        return min((max(n.committed, default=0) for n in self.honest_nodes()), default=0)

    def equivocators(self) -> set[int]:
        """Validators named by the equivocation evidence honest nodes produced."""
        return {self.by_key[e.first.validator].index for e in self.evidence}

    def describe(self) -> str:
        """The schedule and outcome, for a failing seed."""
        heights = {n.index: max(n.committed, default=0) for n in self.nodes}
        return (f"seed={self.seed} powers={[self.validator_set.power_of(n.key) for n in self.nodes]} "
                f"behaviours={[n.behaviour.value for n in self.nodes]} network={self.network} "
                f"events={self.trace} heights={heights} rejected={dict(self.rejected)}")

    # ----------------------------------------------------------- plumbing

    def _sync(self, node: SimValidator) -> None:
        core = node.core
        if core is None:
            return
        outbound, events = core.take_outbound(), core.take_events()
        for event in events:
            if isinstance(event, Committed):
                self._record_commit(node, event)
            elif isinstance(event, EquivocationDetected) and node.behaviour is Behaviour.HONEST:
                self.evidence.append(event.evidence)
                # What a node does with it (ledger_node.py): pool it for its next proposals.
                add_evidence = getattr(node.app, "add_evidence", None)
                if add_evidence is not None:
                    add_evidence(event.evidence)
        if self._crashes_on_commit(node, events):
            self.crash(node.index)
            self.schedule(self.now + self.network.down_time, self.restart, node.index)
            return
        for out in outbound:
            if isinstance(out, Broadcast):
                targets = [n for n in self.nodes if n is not node and n.key not in out.exclude]
            else:
                targets = [self.by_key[out.peer]]
            send = self._senders.get(node.behaviour)
            if send is not None:
                send(node, out.message, targets)
            else:
                data = encode_message(out.message)
                for target in targets:
                    self._transmit(node, target, data)
        timer = core.get_timer()
        if node.timer_at is None or timer < node.timer_at:
            node.timer_at = timer
            self.schedule(max(timer, self.now), self._fire_timer, node, core, timer)

    def _crashes_on_commit(self, node: SimValidator, events: list) -> bool:
        network = self.network
        return (network.crash_on_commit > 0 and self.now < network.gst and node.behaviour is Behaviour.HONEST
                and any(isinstance(e, Committed) for e in events) and self.rng.random() < network.crash_on_commit)

    def _record_commit(self, node: SimValidator, event: Committed) -> None:
        previous = node.committed.get(event.height)
        if previous is not None and previous != event.value:
            node.reverted.append(event.height)
        node.committed[event.height] = event.value
        node.commit_times.setdefault(event.height, self.now)

    def _fire_timer(self, node: SimValidator, core: TendermintCore, at: float) -> None:
        if node.core is not core or node.timer_at != at:
            return  # crashed since, or superseded by an earlier timer
        node.timer_at = None
        core.handle_timer(self.now)
        self._sync(node)

    def _partitioned(self, source: SimValidator, target: SimValidator) -> bool:
        if (source.index, target.index) in self._cut_links:
            return True
        return self._groups is not None and self._groups.get(source.index) != self._groups.get(target.index)

    def _transmit(self, source: SimValidator, target: SimValidator, data: bytes) -> None:
        if self._partitioned(source, target):
            return
        network = self.network
        before_gst = self.now < network.gst
        if before_gst and network.loss and self.rng.random() < network.loss:
            return
        copies = 2 if network.duplicate and self.rng.random() < network.duplicate else 1
        for _ in range(copies):
            high = network.pre_gst_max_delay if before_gst else network.max_delay
            delay = self.rng.uniform(network.min_delay, max(high, network.min_delay))
            self.schedule(self.now + delay, self._deliver, source, target, data)

    def _deliver(self, source: SimValidator, target: SimValidator, data: bytes) -> None:
        if target.core is None:
            return
        if self._partitioned(source, target):
            return  # a partition also cuts what was in flight
        message = self._decode(data)
        if isinstance(message, WireError):
            self.rejected["WireError"] += 1
            return
        if self.drop is not None and self.drop(source, target, message):
            return
        if target.behaviour is Behaviour.REPLAY:
            self._archive(target, data)
        elif (target.behaviour in (Behaviour.EQUIVOCATE, Behaviour.DOUBLE_VOTE)
              and isinstance(message, Proposal)):
            self._double_vote(target, message)
        try:
            target.core.handle_message(source.key, message, self.now)
        except RejectedMessage as exc:
            self.rejected[type(exc).__name__] += 1
        self._sync(target)

    def _decode(self, data: bytes) -> Message | WireError:
        decoded = self._decoded.get(data)
        if decoded is None:
            if len(self._decoded) >= 4096:
                self._decoded.clear()
            try:
                decoded = decode_message(data)
            except WireError as exc:
                decoded = exc
            self._decoded[data] = decoded
        return decoded

    # ----------------------------------------------------------- Byzantine

    def _alternative_block(self, height: int, round_: int, block_id: bytes | None) -> bytes | None:
        seen = [b for b in self._seen_blocks.get((height, round_), []) if b != block_id]
        if seen:
            return self.rng.choice(seen)
        return None if block_id is not None else self.rng.randbytes(32)

    def _conflicting(self, node: SimValidator, message: Message) -> Message:
        if isinstance(message, Proposal):
            value = node.app.propose(message.height)
            if value == message.value:  # a deterministic application (the ledger) proposed the same block
                value += b" (equivocated)"
            evil = sign_proposal(node.signer, SIM_CHAIN, message.height, message.round, message.pol_round, value)
            self._seen_blocks.setdefault((message.height, message.round), []).append(evil.block_id)
            return evil
        if isinstance(message, Vote):
            block_id = self._alternative_block(message.height, message.round, message.block_id)
            return sign_vote(node.signer, SIM_CHAIN, message.kind, message.height, message.round, block_id)
        return message

    def _send_equivocating(self, node: SimValidator, message: Message, targets: list[SimValidator]) -> None:
        if signer_of(message) != node.key:  # a relay: passed on to some only
            data = encode_message(message)
            for target in targets:
                if self.rng.random() < 0.5:
                    self._transmit(node, target, data)
            return
        if isinstance(message, Proposal):
            self._seen_blocks.setdefault((message.height, message.round), []).append(message.block_id)
        honest = encode_message(message)
        behaviour = node.behaviour
        if (behaviour is Behaviour.DOUBLE_VOTE and isinstance(message, Proposal)
                or behaviour is Behaviour.EQUIVOCATE_PROPOSAL and isinstance(message, Vote)):
            for target in targets:
                self._transmit(node, target, honest)
            return
        evil = encode_message(self._conflicting(node, message))
        for target in targets:
            self._transmit(node, target, evil if self.rng.random() < 0.5 else honest)

    def _send_invalid_proposal(self, node: SimValidator, message: Message, targets: list[SimValidator]) -> None:
        if not isinstance(message, Proposal) or message.proposer != node.key:
            data = encode_message(message)
            for target in targets:
                self._transmit(node, target, data)
            return
        if message.round > 0 and self.rng.random() < 0.5:
            # A proof-of-lock round nobody saw a polka in.
            pol_round, value = self.rng.randrange(message.round), message.value
        else:
            pol_round, value = -1, b"invalid h=%d #%d" % (message.height, self.rng.getrandbits(32))
        bad = sign_proposal(node.signer, SIM_CHAIN, message.height, message.round, pol_round, value)
        sent = [bad] + [sign_vote(node.signer, SIM_CHAIN, kind, message.height, message.round, bad.block_id)
                        for kind in (Kind.PREVOTE, Kind.PRECOMMIT)]
        for data in map(encode_message, sent):
            for target in targets:
                self._transmit(node, target, data)

    def _archive(self, node: SimValidator, data: bytes) -> None:
        """Keep ``data`` to replay later: the first ARCHIVE_SIZE, then a random sample."""
        archive = self._archives.setdefault(node.index, [])
        if len(archive) < ARCHIVE_SIZE:
            archive.append(data)
        elif self.rng.random() < 0.1:
            archive[self.rng.randrange(ARCHIVE_SIZE)] = data

    def _old_message(self, node: SimValidator, default: bytes) -> bytes:
        archive = self._archives.get(node.index)
        return self.rng.choice(archive) if archive else default

    def _send_forging(self, node: SimValidator, message: Message, targets: list[SimValidator]) -> None:
        data = encode_message(message)
        forged = _with_broken_signature(message, data)
        replay = self._old_message(node, data)
        self._archive(node, data)
        for target in targets:
            self._transmit(node, target, data)
            if self.rng.random() < BAD_COPY_SHARE:
                copies = (forged, self.rng.randbytes(self.rng.randrange(1, 200)), replay)
                self._transmit(node, target, self.rng.choice(copies))

    def _send_replaying(self, node: SimValidator, message: Message, targets: list[SimValidator]) -> None:
        data = encode_message(message)
        self._archive(node, data)
        for target in targets:
            self._transmit(node, target, data)
            if self.rng.random() < BAD_COPY_SHARE:
                self._transmit(node, target, self._old_message(node, data))

    def _send_withholding(self, node: SimValidator, message: Message, targets: list[SimValidator]) -> None:
        if signer_of(message) != node.key:
            return  # relays nothing
        kind = Kind.PROPOSAL if isinstance(message, Proposal) else message.kind
        key = (node.index, kind, message.height, message.round)
        chosen = self._withheld_from.get(key)
        if chosen is None:
            others = [n.index for n in self.nodes if n is not node]
            chosen = self._withheld_from[key] = frozenset(self.rng.sample(others, self.rng.randrange(len(others))))
        data = encode_message(message)
        for target in targets:
            if target.index in chosen:
                self._transmit(node, target, data)

    def _double_vote(self, node: SimValidator, proposal: Proposal) -> None:
        blocks = self._seen_blocks.setdefault((proposal.height, proposal.round), [])
        if proposal.block_id in blocks:
            return
        blocks.append(proposal.block_id)
        targets = [n for n in self.nodes if n is not node and self.rng.random() < 0.5]
        for kind in (Kind.PREVOTE, Kind.PRECOMMIT):
            vote = sign_vote(node.signer, SIM_CHAIN, kind, proposal.height, proposal.round, proposal.block_id)
            data = encode_message(vote)
            for target in targets:
                self._transmit(node, target, data)


def _flipped_first_byte(signature: bytes) -> bytes:
    return bytes([signature[0] ^ 0x01]) + signature[1:]


def _with_broken_signature(message: Message, data: bytes) -> bytes:
    """``message`` (encoded as ``data``) with the first byte of a signature it carries flipped.

    Never a byte chosen by position in the encoding: a block's last byte is
    Brotli output, and whether flipping it leaves a decodable block depends on
    the block's bytes, which hold ML-DSA signatures (randomised): a replay of
    the seed would then take another path. A message without a signature
    (Status) loses its last byte's low bit."""
    if isinstance(message, (Vote, Proposal)):
        return encode_message(dataclasses.replace(message, signature=_flipped_first_byte(message.signature)))
    if isinstance(message, Commit) and message.certificate.signatures:
        certificate = message.certificate
        (index, signature), *rest = certificate.signatures
        broken = dataclasses.replace(certificate, signatures=((index, _flipped_first_byte(signature)), *rest))
        return encode_message(dataclasses.replace(message, certificate=broken))
    if isinstance(message, Evidence):
        return encode_message(dataclasses.replace(
            message, first=dataclasses.replace(message.first, signature=_flipped_first_byte(message.first.signature))))
    return data[:-1] + bytes([data[-1] ^ 0x01])


def sim_ml_dsa_key(seed: int, index: int):
    """Node ``index``'s ML-DSA-65 key (deterministic in the seed)."""
    return ml_dsa_key_from_seed(hashlib.sha256(b"sim-ml-dsa-%d-%d" % (seed, index)).digest())


def sim_identities(seed: int, count: int) -> list[Identity]:
    """The identities of a simulation's nodes (deterministic in the seed)."""
    return [Identity.from_seed(b"sim-%d-%d" % (seed, i)) for i in range(count)]


def byzantine_by_stake(powers: list[int], rng: random.Random) -> list[int]:
    """A random set of validators with as much power as possible while 3 × power < total."""
    total = sum(powers)
    chosen, power = [], 0
    for index in rng.sample(range(len(powers)), len(powers)):
        if 3 * (power + powers[index]) < total:
            chosen.append(index)
            power += powers[index]
    return sorted(chosen)


__all__ = ["BYZANTINE_BEHAVIOURS", "Behaviour", "ConsensusSim", "NetworkConfig", "SIM_CONFIG", "SIM_CHAIN", "SimApp", "byzantine_by_stake",
           "sim_identities"]
