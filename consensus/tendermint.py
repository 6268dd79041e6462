"""The consensus core: Tendermint's algorithm as a sans-IO state machine.

:class:`TendermintCore` follows Algorithm 1 of Buchman, Kwon and Milosevic,
*The latest gossip on BFT consensus* (arXiv 1807.04938); comments name the
paper's line numbers. It is fed messages (:meth:`handle_message`) and timer
expiries (:meth:`handle_timer`) with the current time; it returns messages to
send (:meth:`take_outbound`), events (:meth:`take_events`: decisions with
their commit certificates, evidence of equivocation) and when it wants to be
woken (:meth:`get_timer`). It never does I/O and never reads a clock, so the
same code runs in the trio driver and in the deterministic simulator.

Beyond the paper, for a network that loses messages and nodes that crash:

- every message this node signed at its current height is re-sent every
  ``rebroadcast_interval``, so a lost message costs time, not liveness;
- a message from a height we have decided (or a :class:`Status`, which a
  node with nothing of its own to re-send sends every ``rebroadcast_interval``) is
  answered with the decisions from that height on (value and commit certificate, :class:`Commit`), from
  which the node behind commits without re-running the rounds, asking for
  the next batch as soon as it has executed one;
- messages for the next height are kept (boundedly) until we get there;
- after a decision the next height starts ``timeout_commit`` later (so one
  call decides at most one height by the rounds), and a round-0 proposer
  whose application has nothing to propose waits for
  :meth:`txs_available` or ``idle_block_interval`` (no empty blocks back to
  back); docs/ARCHITECTURE.md (Pacemaker) gives the rule;
- before a signed message is handed out, the signer state (last height,
  round and step signed, lock, valid value, what was signed) is saved to the
  store; a restarted node reloads it and never signs a conflicting message.
  What one input changes (a decision, the next height's proposal and our
  prevote for it) is saved in one write at the end of the call that took the
  input (:meth:`_persist`): one sync, not one per signature, on the path of
  every block.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Protocol

from hypermesh.transport.identity import Identity

from .store import ConsensusStore, SavedState
from .signing import Signer, as_signer
from .validators import ValidatorSet
from .wire import (
    Commit,
    CommitCertificate,
    DuplicateMessage,
    Evidence,
    InvalidValue,
    Kind,
    Message,
    Proposal,
    ProposalHeader,
    RejectedMessage,
    RoundOutOfRange,
    Status,
    Vote,
    WrongHeight,
    block_id_of,
    decode_message,
    encode_message,
    make_certificate,
    make_evidence,
    sign_proposal,
    sign_vote,
    verify_commit,
    verify_evidence,
    verify_proposal,
    verify_vote,
)


class Application(Protocol):
    """The deterministic state machine the chain orders values for."""

    def propose(self, height: int) -> bytes:
        """A new value to propose at ``height``."""

    def is_valid(self, height: int, value: bytes) -> bool:
        """Whether ``value`` may be decided at ``height`` (the paper's valid(v))."""

    # Optional: ``finalize(commit) -> ValidatorSet | None``. An application
    # that has it executes each decided value at once, before the next
    # height's proposer is chosen, and may return the validator set of the
    # next height (a chain whose stake changes its validators); see
    # TendermintCore._finalize.
    #
    # Optional: ``has_pending() -> bool``: whether a proposal now would carry
    # anything (transactions, evidence). An application that has it gets no
    # empty blocks back to back: an idle proposer waits for
    # :meth:`TendermintCore.txs_available` or ``idle_block_interval``.


@dataclass(frozen=True, slots=True)
class TendermintConfig:
    # The paper's timeoutX(r) = initTimeoutX + r * timeoutDelta.
    timeout_propose: float = 1.0
    timeout_prevote: float = 0.5
    timeout_precommit: float = 0.5
    timeout_delta: float = 0.5
    rebroadcast_interval: float = 1.0
    # After a decision, the next height starts this much later (CometBFT's
    # timeout_commit): late precommits still arrive, and no input makes the
    # core decide heights in a loop.
    timeout_commit: float = 0.01
    # With an application that says it has nothing to propose (has_pending),
    # the round-0 proposer waits for transactions up to this long, and the
    # others' round-0 propose timeout is this much longer (see _propose_timeout).
    idle_block_interval: float = 1.0
    # Messages for rounds further ahead are refused: bounds the vote tables.
    max_rounds_ahead: int = 64
    # Decisions sent at once to a node behind; next-height messages kept.
    catch_up_batch: int = 8
    max_future_messages: int = 256


class Step(enum.IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2


# The order of a validator's signatures within a round (privval's rule).
_SIGN_ORDER = {Kind.PROPOSAL: 0, Kind.PREVOTE: 1, Kind.PRECOMMIT: 2}


@dataclass(frozen=True, slots=True)
class Broadcast:
    message: Message
    # Validators that have it already (a relay skips its signer and whoever sent it to us).
    exclude: frozenset[bytes] = frozenset()


@dataclass(frozen=True, slots=True)
class SendTo:
    peer: bytes  # validator public key
    message: Message


@dataclass(frozen=True, slots=True)
class Committed:
    height: int
    round: int
    value: bytes
    certificate: CommitCertificate


@dataclass(frozen=True, slots=True)
class EquivocationDetected:
    evidence: Evidence


# Rule applications one input may cause at most (a few are the most a round needs).
MAX_RULE_PASSES = 64

# Votes of one validator for different blocks in one round and type that are
# counted (an equivocator's votes count for each block, as in the paper: a
# polka may rest on them). Bounded, so that equivocation cannot exhaust memory;
# beyond it, only votes for the block of a proposal we hold are still counted
# (a re-proposal names the polka it rests on, so that one is never hidden).
MAX_BLOCKS_PER_VOTER = 3


class _Tally:
    """One round's votes of one type: per validator its votes by block, power per block, power that voted."""

    __slots__ = ("votes", "power", "total")

    def __init__(self):
        self.votes: dict[bytes, dict[bytes | None, Vote]] = {}
        self.power: Counter = Counter()
        self.total = 0

    def add(self, vote: Vote, power: int) -> None:
        by_block = self.votes.get(vote.validator)
        if by_block is None:
            by_block = self.votes[vote.validator] = {}
            self.total += power
        by_block[vote.block_id] = vote
        self.power[vote.block_id] += power

    def has(self, vote: Vote) -> bool:
        return vote.block_id in self.votes.get(vote.validator, ())

    def for_block(self, block_id: bytes | None) -> list[Vote]:
        return [by_block[block_id] for by_block in self.votes.values() if block_id in by_block]


class _Timeout(enum.IntEnum):
    PROPOSE = 0
    PREVOTE = 1
    PRECOMMIT = 2
    COMMIT = 3  # the commit wait is over: round 0 of the height starts
    IDLE = 4  # an idle proposer proposes (an empty block) all the same


class TendermintCore:
    def __init__(
        self,
        chain_id: str,
        validators: ValidatorSet,
        identity: Identity | Signer | None,
        app: Application,
        store: ConsensusStore,
        config: TendermintConfig = TendermintConfig(),
    ):
        self.chain_id = chain_id
        self.validators = validators
        self.signer = as_signer(identity) if identity is not None else None
        self.public_key = self.signer.name if self.signer is not None else None
        self._active_signer = self._signer_for(validators)
        self.is_validator = self._active_signer is not None
        self.app = app
        self.store = store
        self.config = config
        self._outbound: list[Broadcast | SendTo] = []
        # What _persist must write before any output leaves this call: decisions, and whether the signer state changed.
        self._unsaved_commits: list[Commit] = []
        self._state_changed = False
        self._events: list = []
        self._timers: list[tuple[float, int, _Timeout, int, int]] = []
        self._sequence = itertools.count()
        self._next_rebroadcast: float | None = None
        self._catch_up_offered: dict[bytes, tuple[int, float]] = {}
        self._round_offered: dict[bytes, tuple[int, float]] = {}
        self._future_commits: dict[int, Commit] = {}
        self._future_messages: list[tuple[bytes, Message]] = []
        # (height, round, step) of the latest message signed: nothing at or before it is signed again.
        self._last_signed: tuple[int, int, int] = (0, -1, -1)
        saved = store.load_state()
        decided = store.last_commit_height()
        if saved is not None and saved.height <= decided:
            # Killed between saving a decision and the state of the next
            # height: start that height afresh, remembering only what we signed.
            self._last_signed = saved.last_signed
            saved = None
        self.height = saved.height if saved else decided + 1
        self._reset_height()
        if saved is not None:
            self.round = saved.round
            self.locked_round, self.locked_value = saved.locked_round, saved.locked_value
            self.valid_round, self.valid_value = saved.valid_round, saved.valid_value
            self._last_signed = saved.last_signed
            for encoded in saved.own_messages:
                message = decode_message(encoded)
                self._own[(self._kind_of(message), message.round)] = message
                self._record(message)
            for encoded in saved.valid_polka:
                vote = decode_message(encoded)
                if not self._tally(vote.kind, vote.round).has(vote):
                    self._record(vote)

    # ----------------------------------------------------------- driver I/O

    def start(self, now: float) -> None:
        """Begin (or, after a restart, resume) at the saved height and round."""
        self._next_rebroadcast = now + self.config.rebroadcast_interval
        self._start_round(self.round, now)
        self._advance(now)
        self._persist()

    def take_outbound(self) -> list[Broadcast | SendTo]:
        outbound, self._outbound = self._outbound, []
        return outbound

    def take_events(self) -> list:
        events, self._events = self._events, []
        return events

    def get_timer(self) -> float:
        timer = self._next_rebroadcast if self._next_rebroadcast is not None else float("inf")
        while self._timers and self._timers[0][3:] != (self.height, self.round):
            heapq.heappop(self._timers)  # a timeout of a round we have left
        if self._timers:
            timer = min(timer, self._timers[0][0])
        return timer

    def handle_timer(self, now: float) -> None:
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, height, round_ = heapq.heappop(self._timers)
            if height == self.height and round_ == self.round:
                self._on_timeout(kind, now)
        if self._next_rebroadcast is not None and now >= self._next_rebroadcast:
            self._next_rebroadcast = now + self.config.rebroadcast_interval
            self._rebroadcast()
        self._advance(now)
        self._persist()

    def _rebroadcast(self) -> None:
        """Re-send what the current round and the next proposer's proof of lock need.

        Our own messages of this round, the polka that made our valid value
        valid (a proposer re-proposing it names that round, and every honest
        validator must be able to see the polka to follow it, line 28), and
        our height.
        """
        for (_, round_), message in self._own.items():
            if round_ == self.round:
                self._outbound.append(Broadcast(message))
        for vote in self._valid_polka():
            self._outbound.append(Broadcast(vote))
        # Where we are, so that a node ahead answers with what it decided: a
        # node that lost the precommits of a height the others have left gets
        # that decision this way (its re-sent votes of that height are not
        # answered, see _check_height), and one that signs nothing (a
        # follower, a validator in its commit wait) has no other way to say it.
        self._outbound.append(Broadcast(Status(self.height)))

    def _pass_on_round(self) -> None:
        """Send this round's proposal (if valid) and every other vote of it we hold to all but their signers:
        the gossip the paper assumes (what one correct process receives, all do), for messages a
        Byzantine signer sent to only some of us.

        Done when a step of the round times out, not on each message's arrival: every validator
        sends its own messages to all, so relaying each on arrival made a round's votes cost n²
        messages where n suffice, and the proposal (the whole block) n - 2 copies more per node;
        a round that goes well never needs it, and one that stalls times out.
        """
        proposal = self._proposals.get(self.round)
        if (proposal is not None and proposal.proposer != self.public_key
                and self._is_valid(proposal.value, proposal.block_id)):  # one the application refuses stays here
            self._outbound.append(Broadcast(proposal, frozenset((proposal.proposer,))))
        for kind in (Kind.PREVOTE, Kind.PRECOMMIT):
            tally = self._tallies.get((kind, self.round))
            if tally is None:
                continue
            for validator, by_block in tally.votes.items():
                if validator != self.public_key:
                    for vote in by_block.values():
                        self._outbound.append(Broadcast(vote, frozenset((validator,))))

    def _valid_polka(self) -> list[Vote]:
        if self.valid_value is None:
            return []
        polka = self._tallies.get((Kind.PREVOTE, self.valid_round))
        return polka.for_block(block_id_of(self.valid_value)) if polka is not None else []

    def handle_message(self, sender: bytes, message: Message, now: float) -> None:
        """Take in one decoded message from ``sender``.

        Raises a :class:`RejectedMessage` subclass for a message that is not
        accepted; ``misbehaviour`` on the error says whether to blame ``sender``.
        """
        try:
            if isinstance(message, Commit):
                self._on_commit(message, now)
            elif isinstance(message, Status):
                if message.height < self.height:
                    self._offer_commits(sender, message.height, now)
            elif isinstance(message, Evidence):
                self._on_evidence(sender, message)
            else:
                self._check_height(sender, message, now)
                if message.round > self.round + self.config.max_rounds_ahead:
                    raise RoundOutOfRange(f"round {message.round} is too far ahead of {self.round}")
                if message.round < self.round:
                    self._offer_round(sender, now)
                if isinstance(message, Vote):
                    self._on_vote(sender, message)
                else:
                    self._on_proposal(sender, message)
        finally:
            # A refused message may still have changed what we know (an
            # invalid proposal is this round's proposal: we prevote nil).
            self._advance(now)
            self._persist()

    # ------------------------------------------------------------- intake

    def _check_height(self, sender: bytes, message: Vote | Proposal, now: float) -> None:
        if message.height == self.height:
            return
        # Of the height we decided last, it is most likely a precommit that came after the quorum: its
        # sender gets everyone's precommits as we did (answering each such vote with our decision cost
        # a message and its checks per late vote). A sender stuck there is answered when the Status of
        # its next re-send arrives (_rebroadcast).
        if message.height < self.height - 1:
            self._offer_commits(sender, message.height, now)
        elif message.height == self.height + 1 and len(self._future_messages) < self.config.max_future_messages:
            self._future_messages.append((sender, message))
        raise WrongHeight(f"message for height {message.height}, this node is at {self.height}")

    def _on_vote(self, sender: bytes, vote: Vote) -> None:
        tally = self._tally(vote.kind, vote.round)
        if tally.has(vote):
            raise DuplicateMessage("vote already counted")
        others = tally.votes.get(vote.validator)
        if others and len(others) >= MAX_BLOCKS_PER_VOTER and not self._is_proposed(vote.block_id):
            raise DuplicateMessage("enough conflicting votes of this validator are known")
        verify_vote(vote, self.chain_id, self.validators)
        if others and self._evidence_key(vote) not in self._evidence_seen:
            self._equivocation(make_evidence(next(iter(others.values())), vote))
        self._record(vote)  # passed on if this round times out, not now (_pass_on_round)

    def _on_proposal(self, sender: bytes, proposal: Proposal) -> None:
        previous = self._proposals.get(proposal.round)
        if previous is not None and previous.block_id == proposal.block_id:
            raise DuplicateMessage("proposal already received")
        verify_proposal(proposal, self.chain_id, self.validators)
        if previous is not None:
            # An equivocating proposer: evidence of it; keep the first (the
            # decision, if it is the other, reaches us as a Commit).
            evidence = make_evidence(previous, proposal)
            if self._evidence_key(evidence.first) not in self._evidence_seen:
                self._equivocation(evidence)
            raise DuplicateMessage("a different proposal for this round was received first")
        if not self._is_valid(proposal.value, proposal.block_id):
            self._record(proposal)  # still the proposal of this round: we prevote nil for it
            raise InvalidValue("the application refuses the proposed value")
        self._record(proposal)  # passed on if this round times out, not now (_pass_on_round)

    def _on_commit(self, commit: Commit, now: float) -> None:
        height = commit.certificate.height
        if height < self.height:
            raise DuplicateMessage(f"height {height} is decided here already")
        if height > self.height:
            if height <= self.height + self.config.catch_up_batch and height not in self._future_commits:
                self._future_commits[height] = commit  # verified when we get there
                return
            raise WrongHeight(f"commit for height {height}, this node is at {self.height}")
        verify_commit(commit, self.chain_id, self.validators)
        if not self._is_valid(commit.value, commit.certificate.block_id):
            raise InvalidValue("the application refuses a certified value")
        self._decide(commit, now, from_commit=True)

    def _on_evidence(self, sender: bytes, evidence: Evidence) -> None:
        # Known before checked: keys are only ever added for verified evidence.
        if self._evidence_key(evidence.first) in self._evidence_seen:
            raise DuplicateMessage("equivocation already known")
        verify_evidence(evidence, self.chain_id, self.validators)
        self._equivocation(evidence, frozenset((sender,)))

    @staticmethod
    def _evidence_key(signed: Vote | ProposalHeader) -> tuple:
        return (signed.validator, signed.kind, signed.height, signed.round)

    def _equivocation(self, evidence: Evidence, exclude: frozenset[bytes] = frozenset()) -> None:
        key = self._evidence_key(evidence.first)
        if key in self._evidence_seen:
            raise DuplicateMessage("equivocation already known")
        self._evidence_seen.add(key)
        self._events.append(EquivocationDetected(evidence))
        self._relay(evidence, exclude)

    def _relay(self, message: Message, exclude: frozenset[bytes]) -> None:
        """Pass on a message seen for the first time (gossip).

        The paper assumes that a message one correct process receives, every
        correct process receives; a Byzantine sender that tells only some of
        us would otherwise leave the rest unable to see a polka.
        """
        self._outbound.append(Broadcast(message, exclude))

    def _record(self, message: Vote | Proposal) -> None:
        """Count a verified message (ours or a peer's) of the current height."""
        if isinstance(message, Vote):
            power = self.validators.power_of(message.validator)
            self._tally(message.kind, message.round).add(message, power)
            sender = message.validator
        else:
            self._proposals[message.round] = message
            sender = message.proposer
            power = self.validators.power_of(sender)
        if message.round > self.round:
            self._round_senders.setdefault(message.round, {})[sender] = power

    def _is_proposed(self, block_id: bytes | None) -> bool:
        return any(p.block_id == block_id for p in self._proposals.values())

    def _tally(self, kind: Kind, round_: int) -> _Tally:
        tally = self._tallies.get((kind, round_))
        if tally is None:
            tally = self._tallies[(kind, round_)] = _Tally()
        return tally

    def _is_valid(self, value: bytes, block_id: bytes) -> bool:
        valid = self._validity.get(block_id)
        if valid is None:
            valid = self._validity[block_id] = bool(self.app.is_valid(self.height, value))
        return valid

    # -------------------------------------------------------------- rules

    def _quorum_for(self, kind: Kind, round_: int, block_id: bytes | None) -> bool:
        tally = self._tallies.get((kind, round_))
        return tally is not None and self.validators.is_quorum(tally.power[block_id])

    def _quorum_any(self, kind: Kind, round_: int) -> bool:
        tally = self._tallies.get((kind, round_))
        return tally is not None and self.validators.is_quorum(tally.total)

    def _advance(self, now: float) -> None:
        # Each rule that fires moves the step or round forward (or sets a
        # once-per-round flag), and a decision stops the rules until the
        # commit wait is over, so this ends after a few passes (bounded all
        # the same: what is left waits for the next input).
        for _ in range(MAX_RULE_PASSES):
            if not self._apply_one_rule(now):
                return

    def _apply_one_rule(self, now: float) -> bool:
        if self._decide_if_certified(now):
            return True
        if self._commit_wait:
            return False  # this height's messages are kept and counted; its rounds start after the wait
        # Line 55: more than f of the power is in a later round: join it.
        later = [r for r, senders in self._round_senders.items()
                 if r > self.round and self.validators.exceeds_faulty(sum(senders.values()))]
        if later:
            self._start_round(max(later), now)
            return True
        r = self.round
        proposal = self._proposals.get(r)
        if self.step is Step.PROPOSE and proposal is not None:
            vr = proposal.pol_round
            if vr == -1 or self._quorum_for(Kind.PREVOTE, vr, proposal.block_id):  # lines 22 and 28
                acceptable = self._lock_allows(proposal)
                valid = self._is_valid(proposal.value, proposal.block_id)
                self._vote(Kind.PREVOTE, proposal.block_id if valid and acceptable else None)
                self.step = Step.PREVOTE
                return True
        if self.step is Step.PREVOTE and not self._prevote_timer_set and self._quorum_any(Kind.PREVOTE, r):
            self._prevote_timer_set = True  # line 34
            self._schedule(_Timeout.PREVOTE, self.config.timeout_prevote, now)
        if (self.step >= Step.PREVOTE and proposal is not None and not self._polka_seen
                and self._quorum_for(Kind.PREVOTE, r, proposal.block_id)
                and self._is_valid(proposal.value, proposal.block_id)):
            self._polka_seen = True  # line 36
            self.valid_value, self.valid_round = proposal.value, r
            if self.step is Step.PREVOTE:
                self.locked_value, self.locked_round = proposal.value, r
                self._vote(Kind.PRECOMMIT, proposal.block_id)  # saved, lock and valid value with it
                self.step = Step.PRECOMMIT
            else:
                self._state_changed = True
            return True
        if self.step is Step.PREVOTE and self._quorum_for(Kind.PREVOTE, r, None):  # line 44
            self._vote(Kind.PRECOMMIT, None)
            self.step = Step.PRECOMMIT
            return True
        if not self._precommit_timer_set and self._quorum_any(Kind.PRECOMMIT, r):
            self._precommit_timer_set = True  # line 47
            self._schedule(_Timeout.PRECOMMIT, self.config.timeout_precommit, now)
        return False

    def _lock_allows(self, proposal: Proposal) -> bool:
        """Whether our lock lets us prevote the proposal (lines 23 and 29).

        Unlocked, or locked on this very value, or the proposal shows a
        polka (in its proof-of-lock round) no older than our lock.
        """
        if self.locked_round == -1 or self.locked_value == proposal.value:
            return True
        return proposal.pol_round >= self.locked_round

    def _decide_if_certified(self, now: float) -> bool:
        """Line 49: a proposal and precommits of a quorum for it, in any round."""
        for (kind, round_), tally in self._tallies.items():
            if kind is not Kind.PRECOMMIT or not self.validators.is_quorum(tally.total):
                continue
            proposal = self._proposals.get(round_)
            if proposal is None or not self._quorum_for(Kind.PRECOMMIT, round_, proposal.block_id):
                continue
            if not self._is_valid(proposal.value, proposal.block_id):
                continue
            precommits = tally.for_block(proposal.block_id)
            certificate = make_certificate(precommits, self.validators)
            self._decide(Commit(certificate, proposal.value), now, from_commit=False)
            return True
        return False

    def _start_round(self, round_: int, now: float) -> None:
        """Line 11."""
        self.round = round_
        self.step = Step.PROPOSE
        self._commit_wait = self._awaiting_txs = False
        self._prevote_timer_set = self._precommit_timer_set = self._polka_seen = False
        self._round_senders = {r: s for r, s in self._round_senders.items() if r > round_}
        if self.is_validator and self.validators.proposer(self.height, round_) == self.public_key:
            if (round_ == 0 and self.valid_value is None and (Kind.PROPOSAL, 0) not in self._own
                    and self._app_idle()):
                # Nothing to propose: no empty block yet (txs_available, or the IDLE timeout).
                self._awaiting_txs = True
                self._schedule(_Timeout.IDLE, self.config.idle_block_interval, now)
            else:
                self._propose()
        self._schedule(_Timeout.PROPOSE, self._propose_timeout(round_), now)
        if round_ > 0:
            # Round 0 of a height is saved already, with the decision that began it (or it is where a restart
            # resumes): saving it again at the end of the commit wait was a store write a height for nothing.
            self._state_changed = True

    def _propose(self) -> None:
        """Lines 14-19: propose our valid value (with its proof-of-lock round) or a new one."""
        self._awaiting_txs = False
        if self.valid_value is not None:
            value, pol_round = self.valid_value, self.valid_round
        else:
            value, pol_round = self.app.propose(self.height), -1
        proposal = self._sign_message(Kind.PROPOSAL, self.round, value=value, pol_round=pol_round)
        if proposal is not None and self.round not in self._proposals:
            self._record(proposal)

    def _app_idle(self) -> bool:
        """Whether the application says a proposal now would carry nothing (``has_pending``, if it has one)."""
        has_pending = getattr(self.app, "has_pending", None)
        return has_pending is not None and not has_pending()

    def _propose_timeout(self, round_: int) -> float:
        """The paper's timeoutPropose(round), and in round 0 the wait an idle proposer may take.

        A proposer with nothing to propose waits up to idle_block_interval
        for transactions; a validator with nothing pending itself expects
        that wait, and one that holds transactions (the proposer has them
        too, relayed) expects a proposal at the usual time.
        """
        if round_ == 0 and self._app_idle():
            return self.config.timeout_propose + self.config.idle_block_interval
        return self.config.timeout_propose

    def txs_available(self, now: float) -> None:
        """The application has something to propose now (the driver calls this as transactions arrive):
        a proposer waiting for transactions proposes at once."""
        if self._awaiting_txs:
            self._propose()
            self._advance(now)
            self._persist()

    def _on_timeout(self, kind: _Timeout, now: float) -> None:
        """Lines 57-65, and the ends of the commit wait and of an idle proposer's wait."""
        if kind is _Timeout.COMMIT:
            if self._commit_wait:
                self._start_round(0, now)
            return
        if kind is _Timeout.IDLE:
            if self._awaiting_txs:
                self._propose()
            return
        self._pass_on_round()
        if kind is _Timeout.PROPOSE and self.step is Step.PROPOSE:
            self._vote(Kind.PREVOTE, None)
            self.step = Step.PREVOTE
        elif kind is _Timeout.PREVOTE and self.step is Step.PREVOTE:
            self._vote(Kind.PRECOMMIT, None)
            self.step = Step.PRECOMMIT
        elif kind is _Timeout.PRECOMMIT:
            self._start_round(self.round + 1, now)

    def _schedule(self, kind: _Timeout, base: float, now: float) -> None:
        deadline = now + base + self.round * self.config.timeout_delta
        heapq.heappush(self._timers, (deadline, next(self._sequence), kind, self.height, self.round))

    def _decide(self, commit: Commit, now: float, from_commit: bool) -> None:
        """Line 49's decision (or a certified one from a :class:`Commit`); the next height starts after the
        commit wait (timeout_commit), so no input decides heights in a loop."""
        certificate = commit.certificate
        # The application executes the decision (and may change the validator
        # set) before the next height starts under that set.
        self._finalize(commit)
        self.height += 1
        self._reset_height()
        # Re-sends are for a height that lasts: every message of the new one is sent fresh. At a fixed
        # cadence, a chain deciding ten heights a second re-sent its current votes, the polka behind its
        # valid value and its Status mid-height every interval: ~1 message a height per node for nothing.
        if self._next_rebroadcast is not None:
            self._next_rebroadcast = now + self.config.rebroadcast_interval
        self._unsaved_commits.append(commit)  # saved with the next height's state (_persist)
        self._events.append(Committed(certificate.height, certificate.round, commit.value, certificate))
        self._commit_wait = True
        self._schedule(_Timeout.COMMIT, self.config.timeout_commit, now)
        pending = self._future_commits.pop(self.height, None)
        self._future_commits = {h: c for h, c in self._future_commits.items() if h > self.height}
        if pending is None and from_commit and certificate.height % self.config.catch_up_batch == 0:
            # Catching up (a follower, or a validator back from a crash), at
            # the last of a batch of commits: ask for the next at once. Asking
            # only at each re-send gave catch_up_batch blocks per
            # rebroadcast_interval, and a chain deciding faster left us behind.
            self._outbound.append(Broadcast(Status(self.height)))
        if pending is not None:
            try:
                self._on_commit(pending, now)
                return
            except RejectedMessage:
                pass
        early, self._future_messages = self._future_messages, []
        for sender, message in early:
            try:
                self.handle_message(sender, message, now)
            except RejectedMessage:
                pass

    def _finalize(self, commit: Commit) -> None:
        """Let an application with ``finalize`` execute the decision and change the validator set."""
        finalize = getattr(self.app, "finalize", None)
        if finalize is None:
            return
        validators = finalize(commit)
        if validators is not None:
            self.validators = validators
            self._active_signer = self._signer_for(validators)
            self.is_validator = self._active_signer is not None

    def _reset_height(self) -> None:
        self.round = 0
        self.step = Step.PROPOSE
        self.locked_round, self.locked_value = -1, None
        self.valid_round, self.valid_value = -1, None
        self._tallies: dict[tuple[Kind, int], _Tally] = {}
        self._proposals: dict[int, Proposal] = {}
        self._own: dict[tuple[Kind, int], Vote | Proposal] = {}
        self._round_senders: dict[int, dict[bytes, int]] = {}
        self._validity: dict[bytes, bool] = {}
        self._evidence_seen: set = set()
        self._prevote_timer_set = self._precommit_timer_set = self._polka_seen = False
        self._commit_wait = self._awaiting_txs = False

    # ------------------------------------------------------------ signing

    def _vote(self, kind: Kind, block_id: bytes | None) -> None:
        vote = self._sign_message(kind, self.round, block_id=block_id)
        if vote is not None:
            self._record_own_vote(vote)

    def _record_own_vote(self, vote: Vote) -> None:
        if not self._tally(vote.kind, vote.round).has(vote):
            self._record(vote)

    def _signer_for(self, validators: ValidatorSet) -> Signer | None:
        """What we sign with as a member of ``validators``: the key the set declares for us (None if we are
        not in it, or it declares a key we do not hold: we would only send signatures everyone refuses)."""
        index = None if self.signer is None else validators.index_of(self.signer.name)
        return None if index is None else self.signer.for_key(validators.validators[index].consensus_key)

    def _sign_message(self, kind: Kind, round_: int, *, block_id: bytes | None = None,
                      value: bytes = b"", pol_round: int = -1) -> Vote | Proposal | None:
        """Sign, save, then queue for sending; None if signing could conflict with what we signed before.

        A message we signed already for this height, round and type is sent
        again if it is the same; anything else at or before the latest
        signed position is refused (CometBFT privval's rule), which is what
        keeps a restarted validator from equivocating.
        """
        if not self.is_validator:
            return None
        previous = self._own.get((kind, round_))
        if previous is not None:
            # Our proposal of this round is the proposal, whatever we would propose now.
            if kind is not Kind.PROPOSAL and previous.block_id != block_id:
                return None
            message = previous
        else:
            position = (self.height, round_, _SIGN_ORDER[kind])
            if position <= self._last_signed:
                return None
            if kind is Kind.PROPOSAL:
                message = sign_proposal(self._active_signer, self.chain_id, self.height, round_, pol_round, value)
            else:
                message = sign_vote(self._active_signer, self.chain_id, kind, self.height, round_, block_id)
            self._own[(kind, round_)] = message
            self._last_signed = position
            self._state_changed = True  # saved before the call that signed it returns (_persist)
        self._outbound.append(Broadcast(message))
        return message

    def _persist(self) -> None:
        """Write what this call changed, durably, before the driver can take its output.

        Decisions first, the last one in one transaction with the signer
        state; a node killed before this write has sent nothing of what it
        signed in the call, so forgetting it is safe.
        """
        commits, self._unsaved_commits = self._unsaved_commits, []
        changed, self._state_changed = self._state_changed or bool(commits), False
        for commit in commits[:-1]:
            self.store.save_commit(commit)
        if commits:
            self.store.save_commit(commits[-1], self._saved_state())
        elif changed:
            self.store.save_state(self._saved_state())

    def _saved_state(self) -> SavedState:
        return SavedState(
            height=self.height,
            round=self.round,
            locked_round=self.locked_round,
            locked_value=self.locked_value,
            valid_round=self.valid_round,
            valid_value=self.valid_value,
            last_signed=self._last_signed,
            own_messages=tuple(encode_message(m) for m in self._own.values()),
            valid_polka=tuple(encode_message(v) for v in self._valid_polka()),
        )

    @staticmethod
    def _kind_of(message: Vote | Proposal) -> Kind:
        return Kind.PROPOSAL if isinstance(message, Proposal) else message.kind

    # ----------------------------------------------------------- catch-up

    def _offer_round(self, peer: bytes, now: float) -> None:
        """Send a validator in an earlier round the precommits that moved us on.

        They are votes of more than two thirds of the power for the round
        before ours: the laggard joins that round (line 55), counts a quorum
        of precommits and times out into ours. Without this, validators that
        lost those precommits (before GST) would wait for them for ever, as
        re-sends carry only the current round.
        """
        offered = self._round_offered.get(peer)
        if offered is not None and offered[0] == self.round and now - offered[1] < self.config.rebroadcast_interval:
            return
        if len(self._round_offered) >= 4 * len(self.validators):
            self._round_offered.clear()
        self._round_offered[peer] = (self.round, now)
        tally = self._tallies.get((Kind.PRECOMMIT, self.round - 1))
        if tally is not None:
            for by_block in tally.votes.values():
                for vote in by_block.values():
                    self._outbound.append(SendTo(peer, vote))

    def _offer_commits(self, peer: bytes, height: int, now: float) -> None:
        """Send a node behind the decisions from ``height`` on (at most once per interval)."""
        offered = self._catch_up_offered.get(peer)
        if offered is not None and offered[0] == height and now - offered[1] < self.config.rebroadcast_interval:
            return
        if len(self._catch_up_offered) >= 4 * len(self.validators):
            self._catch_up_offered.clear()
        self._catch_up_offered[peer] = (height, now)
        unsaved = {c.certificate.height: c for c in self._unsaved_commits}
        for h in range(height, min(height + self.config.catch_up_batch, self.height)):
            commit = unsaved.get(h) or self.store.load_commit(h)
            if commit is not None:
                self._outbound.append(SendTo(peer, commit))


__all__ = [
    "Application", "Broadcast", "Committed", "EquivocationDetected", "SendTo", "Step",
    "TendermintConfig", "TendermintCore",
]
