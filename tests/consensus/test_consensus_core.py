"""The sans-IO Tendermint core, one validator fed by hand (the other three are the test)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consensus_testkit import (
    CHAIN,
    CONFIG,
    IDENTITIES,
    CountingApp,
    KEYS,
    VALIDATORS,
    broadcasts,
    feed,
    new_core,
    proposal,
    proposer_of,
    votes,
)
from hypermesh.consensus.store import MemoryConsensusStore
from hypermesh.consensus.tendermint import Committed, EquivocationDetected, SendTo, Step, TendermintCore
from hypermesh.consensus.validators import Validator, ValidatorSet, public_key_of
from hypermesh.consensus.wire import (
    Commit,
    DuplicateMessage,
    ForgedSignature,
    InvalidCertificate,
    InvalidValue,
    Kind,
    NotProposer,
    Proposal,
    RejectedMessage,
    RoundOutOfRange,
    Status,
    UnknownValidator,
    Vote,
    WrongHeight,
    block_id_of,
    encode_message,
    make_certificate,
    sign_proposal,
    sign_vote,
    signer_of,
    verify_certificate,
    verify_evidence,
)
from hypermesh.transport.identity import Identity

# The one validator that proposes none of rounds 0-2 at height 1: it only ever reacts.
ME = next(i for i in IDENTITIES if i not in {proposer_of(1, r) for r in range(3)})
ME_KEY = public_key_of(ME)
OTHERS = [i for i in IDENTITIES if i is not ME]
VALUE = b"the block at height one"


def others(height, round_, count=2):
    """``count`` validators other than ME, the proposer of (height, round) first."""
    proposer = proposer_of(height, round_)
    ordered = [proposer] + [i for i in OTHERS if i is not proposer]
    return [i for i in ordered if i is not ME][:count]


def decide_height_one(core):
    feed(core, [proposal(1, 0, VALUE)])
    feed(core, votes(Kind.PREVOTE, 1, 0, VALUE, others(1, 0)))
    feed(core, votes(Kind.PRECOMMIT, 1, 0, VALUE, others(1, 0)))


def test_validator_prevotes_precommits_and_decides_with_a_certificate():
    core = new_core(ME)
    feed(core, [proposal(1, 0, VALUE)])
    assert [v.block_id for v in broadcasts(core, Kind.PREVOTE)] == [block_id_of(VALUE)]
    feed(core, votes(Kind.PREVOTE, 1, 0, VALUE, others(1, 0)))
    assert [v.block_id for v in broadcasts(core, Kind.PRECOMMIT)] == [block_id_of(VALUE)]
    assert core.locked_value == VALUE and core.locked_round == 0
    feed(core, votes(Kind.PRECOMMIT, 1, 0, VALUE, others(1, 0)))
    [committed] = [e for e in core.take_events() if isinstance(e, Committed)]
    assert (committed.height, committed.round, committed.value) == (1, 0, VALUE)
    verify_certificate(committed.certificate, CHAIN, VALIDATORS)
    assert len(committed.certificate.signatures) == 3
    assert core.height == 2 and core.round == 0 and core.locked_value is None


def test_proposer_proposes_at_start():
    core = new_core(proposer_of(1, 0))
    [sent] = broadcasts(core, Kind.PROPOSAL)
    assert isinstance(sent, Proposal) and (sent.height, sent.round, sent.pol_round) == (1, 0, -1)


def test_a_late_vote_of_the_height_just_decided_is_refused_and_not_answered():
    """Its signer gets everyone's precommits as we did: answering each late precommit with our decision
    cost a message (and its checks at the other end) per late vote, ~1 a height per validator at n = 4."""
    core = new_core(ME)
    decide_height_one(core)
    core.take_outbound()
    late = IDENTITIES[KEYS.index(VALIDATORS.proposer(1, 0))]
    [stale] = votes(Kind.PRECOMMIT, 1, 0, VALUE, [late])
    with pytest.raises(WrongHeight):
        core.handle_message(stale.validator, stale, 0.0)
    assert not core.take_outbound()


def core_that_decided_two_heights():
    """A node outside the set (any node that has decided answers) that decided heights 1 and 2, its outbox empty."""
    signers = [i for i in IDENTITIES if i is not ME][:3]
    core = new_core(None)
    for height in (1, 2):
        feed(core, [proposal(height, 0, VALUE)] + votes(Kind.PREVOTE, height, 0, VALUE, signers)
             + votes(Kind.PRECOMMIT, height, 0, VALUE, signers))
    core.take_outbound()
    return core


def test_a_message_from_further_back_is_refused_and_answered_with_the_decisions():
    core = core_that_decided_two_heights()
    [stale] = votes(Kind.PREVOTE, 1, 0, VALUE, [ME])
    with pytest.raises(WrongHeight):
        core.handle_message(stale.validator, stale, 0.0)
    answered = core.take_outbound()
    assert all(isinstance(o, SendTo) and o.peer == stale.validator for o in answered)
    assert [o.message.certificate.height for o in answered] == [1, 2]


def test_a_node_stuck_at_a_decided_height_gets_the_decision_when_its_re_send_says_where_it_is():
    """Its re-sent votes of that height are not answered (the rule above): the Status every re-send
    carries is, so losing that height's precommits does not leave it behind."""
    signers = [i for i in IDENTITIES if i is not ME][:3]
    ahead = new_core(None)
    feed(ahead, [proposal(1, 0, VALUE)] + votes(Kind.PREVOTE, 1, 0, VALUE, signers)
         + votes(Kind.PRECOMMIT, 1, 0, VALUE, signers))
    ahead.take_outbound()
    stuck = new_core(ME)
    feed(stuck, [proposal(1, 0, VALUE)] + votes(Kind.PREVOTE, 1, 0, VALUE, signers))  # the precommits are lost
    stuck.take_outbound()
    stuck.handle_timer(CONFIG.rebroadcast_interval)
    resent = broadcasts(stuck)
    assert Status(1) in resent
    for message in resent:
        try:
            ahead.handle_message(ME_KEY, message, CONFIG.rebroadcast_interval)
        except WrongHeight:
            pass  # its votes (and what it passes on) of height 1
    [answer] = ahead.take_outbound()
    assert isinstance(answer, SendTo) and answer.peer == ME_KEY
    stuck.handle_message(KEYS[0], answer.message, CONFIG.rebroadcast_interval)
    assert [e.height for e in stuck.take_events() if isinstance(e, Committed)] == [1]


def test_future_height_message_is_refused():
    core = new_core(ME)
    [early] = votes(Kind.PREVOTE, 7, 0, VALUE, OTHERS[:1])
    with pytest.raises(WrongHeight):
        core.handle_message(early.validator, early, 0.0)


def test_round_far_ahead_is_refused():
    core = new_core(ME)
    [far] = votes(Kind.PREVOTE, 1, 1000, VALUE, OTHERS[:1])
    with pytest.raises(RoundOutOfRange):
        core.handle_message(far.validator, far, 0.0)


def test_duplicate_vote_is_refused_and_counted_once():
    core = new_core(ME)
    feed(core, [proposal(1, 0, VALUE)])
    [vote] = votes(Kind.PREVOTE, 1, 0, VALUE, others(1, 0, 1))
    core.handle_message(vote.validator, vote, 0.0)
    with pytest.raises(DuplicateMessage):
        core.handle_message(vote.validator, vote, 0.0)
    assert core.step is Step.PREVOTE  # two of four prevotes (with ours): no polka


def test_forged_votes_are_refused_and_never_counted():
    core = new_core(ME)
    feed(core, [proposal(1, 0, VALUE)])
    for signer in others(1, 0):
        forged = Vote(Kind.PREVOTE, 1, 0, block_id_of(VALUE), public_key_of(signer), bytes(64))
        with pytest.raises(ForgedSignature) as refused:
            core.handle_message(forged.validator, forged, 0.0)
        assert refused.value.misbehaviour
    assert core.step is Step.PREVOTE and not broadcasts(core, Kind.PRECOMMIT)


def test_vote_from_a_non_validator_is_refused():
    core = new_core(ME)
    [vote] = votes(Kind.PREVOTE, 1, 0, VALUE, [Identity.from_seed(b"outsider")])
    with pytest.raises(UnknownValidator):
        core.handle_message(vote.validator, vote, 0.0)


def test_proposal_from_a_validator_that_is_not_the_proposer_is_refused():
    core = new_core(ME)
    impostor = next(i for i in OTHERS if i is not proposer_of(1, 0))
    forged = sign_proposal(impostor, CHAIN, 1, 0, -1, VALUE)
    with pytest.raises(NotProposer):
        core.handle_message(forged.proposer, forged, 0.0)
    assert core.step is Step.PROPOSE


def test_invalid_proposal_is_refused_and_prevoted_nil():
    core = new_core(ME)
    with pytest.raises(InvalidValue):
        feed(core, [proposal(1, 0, b"bad block")])
    assert [v.block_id for v in broadcasts(core, Kind.PREVOTE)] == [None]


def test_two_votes_for_different_blocks_become_evidence():
    core = new_core(ME)
    signer = others(1, 0, 1)
    first = votes(Kind.PREVOTE, 1, 0, VALUE, signer)
    second = votes(Kind.PREVOTE, 1, 0, b"another block", signer)
    feed(core, first + second)
    [event] = [e for e in core.take_events() if isinstance(e, EquivocationDetected)]
    verify_evidence(event.evidence, CHAIN, VALIDATORS)
    assert {event.evidence.first.block_id, event.evidence.second.block_id} == {block_id_of(VALUE), block_id_of(b"another block")}


def test_two_proposals_of_the_proposer_for_one_round_become_evidence():
    core = new_core(ME)
    first, second = proposal(1, 0, VALUE), proposal(1, 0, b"another block")
    feed(core, [first])
    with pytest.raises(DuplicateMessage):
        feed(core, [second])  # the first is kept
    [event] = [e for e in core.take_events() if isinstance(e, EquivocationDetected)]
    verify_evidence(event.evidence, CHAIN, VALIDATORS)
    assert {event.evidence.first.block_id, event.evidence.second.block_id} == {first.block_id, second.block_id}
    assert event.evidence.first.validator == first.proposer
    relayed = [o for o in core.take_outbound() if o.message == event.evidence]
    assert len(relayed) == 1  # passed on, as double votes are


def test_missing_proposal_leads_to_nil_votes_and_a_longer_next_round():
    core = new_core(ME)
    assert core.get_timer() == 1.0  # timeout_propose(0)
    core.handle_timer(1.0)
    assert [v.block_id for v in broadcasts(core, Kind.PREVOTE)] == [None]
    feed(core, votes(Kind.PREVOTE, 1, 0, None, others(1, 0)), now=1.1)
    assert [v.block_id for v in broadcasts(core, Kind.PRECOMMIT)] == [None]
    feed(core, votes(Kind.PRECOMMIT, 1, 0, None, others(1, 0)), now=1.2)
    core.handle_timer(1.6)  # timeout_prevote(0) from the prevote quorum at 1.1: already precommitted
    assert core.round == 0
    assert core.get_timer() == pytest.approx(1.7)  # timeout_precommit(0) from the precommit quorum at 1.2
    core.handle_timer(1.7)
    assert core.round == 1
    assert core.get_timer() == pytest.approx(1.7 + 1.0 + 0.5)  # timeout_propose(1) grew by delta


def lock_in_round_zero(core):
    feed(core, [proposal(1, 0, VALUE)])
    feed(core, votes(Kind.PREVOTE, 1, 0, VALUE, others(1, 0)))
    feed(core, votes(Kind.PRECOMMIT, 1, 0, None, others(1, 0)))
    core.handle_timer(core.get_timer())
    assert core.round == 1 and core.locked_value == VALUE
    core.take_outbound()


def test_locked_validator_prevotes_nil_for_a_new_value():
    core = new_core(ME)
    lock_in_round_zero(core)
    feed(core, [proposal(1, 1, b"a different block")], now=5.0)
    assert [v.block_id for v in broadcasts(core, Kind.PREVOTE)] == [None]


def test_locked_validator_unlocks_on_a_later_polka():
    core = new_core(ME)
    lock_in_round_zero(core)
    other = b"a different block"
    # Round 1: a polka for another value (ME missed the proposal and prevoted nil).
    core.handle_timer(core.get_timer())
    feed(core, votes(Kind.PREVOTE, 1, 1, other, others(1, 1, 3)), now=5.0)
    feed(core, votes(Kind.PRECOMMIT, 1, 1, None, others(1, 1, 3)), now=5.0)
    core.handle_timer(core.get_timer())
    assert core.round == 2
    core.take_outbound()
    feed(core, [proposal(1, 2, other, pol_round=1)], now=9.0)
    assert [v.block_id for v in broadcasts(core, Kind.PREVOTE)] == [block_id_of(other)]


def test_validator_joins_a_round_that_more_than_a_third_has_reached():
    core = new_core(ME)
    feed(core, votes(Kind.PREVOTE, 1, 3, None, others(1, 0)))
    assert core.round == 3


def test_commit_message_lets_a_node_behind_decide():
    core = new_core(ME)
    precommits = votes(Kind.PRECOMMIT, 1, 0, VALUE, OTHERS)
    certificate = make_certificate(precommits, VALIDATORS)
    with pytest.raises(InvalidCertificate):
        core.handle_message(KEYS[0], Commit(make_certificate(precommits[:2], VALIDATORS), VALUE), 0.0)
    core.handle_message(KEYS[0], Commit(certificate, VALUE), 0.0)
    assert [e.value for e in core.take_events() if isinstance(e, Committed)] == [VALUE]
    assert core.height == 2


def test_restarted_validator_signs_nothing_conflicting():
    store = MemoryConsensusStore()
    core = new_core(ME, store)
    core.handle_timer(1.0)  # no proposal: prevote nil at height 1 round 0
    [nil_prevote] = broadcasts(core, Kind.PREVOTE)
    restarted = new_core(ME, store, now=2.0)  # kill -9: the core is rebuilt from its store
    restarted.take_outbound()
    feed(restarted, [proposal(1, 0, VALUE)], now=2.0)
    sent = broadcasts(restarted, Kind.PREVOTE)
    assert all(v.block_id is None for v in sent)
    restarted.handle_timer(2.0 + 10.0)  # rebroadcast: the same nil prevote, byte for byte
    assert nil_prevote in broadcasts(restarted, Kind.PREVOTE)


def test_restarted_validator_keeps_its_lock():
    store = MemoryConsensusStore()
    core = new_core(ME, store)
    lock_in_round_zero(core)
    restarted = new_core(ME, store, now=5.0)
    assert (restarted.height, restarted.round, restarted.locked_value) == (1, 1, VALUE)
    restarted.take_outbound()
    feed(restarted, [proposal(1, 1, b"a different block")], now=5.0)
    assert [v.block_id for v in broadcasts(restarted, Kind.PREVOTE)] == [None]
    restarted.handle_timer(5.0 + 10.0)  # the re-send carries the polka that justified the lock
    resent = broadcasts(restarted, Kind.PREVOTE)
    assert sign_vote(ME, CHAIN, Kind.PREVOTE, 1, 0, block_id_of(VALUE)) in resent
    assert len([v for v in resent if v.round == 0]) == 3


def test_polka_resting_on_an_equivocators_fourth_vote_is_still_seen():
    """The cap on an equivocator's votes must not hide the polka a re-proposal names."""
    core = new_core(ME)
    liar = others(1, 0, 1)
    honest = [i for i in OTHERS if i not in liar][:2]
    feed(core, [proposal(1, 0, b"x")])
    feed(core, votes(Kind.PREVOTE, 1, 0, None, liar) + votes(Kind.PREVOTE, 1, 0, b"junk one", liar)
         + votes(Kind.PREVOTE, 1, 0, b"junk two", liar))
    feed(core, votes(Kind.PREVOTE, 1, 0, VALUE, honest))  # two honest prevotes for VALUE: no polka yet
    feed(core, votes(Kind.PRECOMMIT, 1, 0, None, OTHERS), now=0.1)
    core.handle_timer(core.get_timer())  # timeout_prevote: precommit nil
    core.handle_timer(core.get_timer())  # timeout_precommit: round 1
    assert core.round == 1
    core.take_outbound()
    reproposal = proposal(1, 1, VALUE, pol_round=0)
    feed(core, [reproposal], now=2.0)
    feed(core, votes(Kind.PREVOTE, 1, 0, VALUE, liar), now=2.1)  # its fourth block: completes the polka
    mine = [v for v in broadcasts(core, Kind.PREVOTE) if v.validator == ME_KEY]
    assert [(v.round, v.block_id) for v in mine] == [(1, block_id_of(VALUE))]


@settings(max_examples=60)
@given(st.data())
def test_any_sequence_of_signed_messages_and_timeouts_is_handled_and_never_makes_me_equivocate(data):
    core = new_core(ME)
    signed = {}
    now = 0.0
    for _ in range(data.draw(st.integers(1, 60), label="steps")):
        height = core.height + data.draw(st.sampled_from([-1, 0, 0, 0, 1]), label="height offset")
        round_ = data.draw(st.integers(0, 3), label="round")
        value = data.draw(st.sampled_from([None, b"a", b"b", b"bad"]), label="value")
        action = data.draw(st.sampled_from(["timer", "proposal", Kind.PREVOTE, Kind.PRECOMMIT]), label="action")
        try:
            if action == "timer":
                now = max(now, core.get_timer())
                core.handle_timer(now)
            elif height >= 1 and action == "proposal":
                if value is not None and proposer_of(height, round_) is not ME:
                    pol_round = data.draw(st.integers(-1, round_ - 1), label="pol round")
                    feed(core, [proposal(height, round_, value, pol_round)], now)
            elif height >= 1:
                signers = data.draw(st.lists(st.sampled_from(OTHERS), min_size=1, max_size=3, unique=True))
                feed(core, votes(action, height, round_, value, signers), now)
        except RejectedMessage:
            pass
        for out in core.take_outbound():
            message = out.message
            if isinstance(message, (Vote, Proposal)) and signer_of(message) == ME_KEY:
                key = (type(message).__name__, message.height, message.round, getattr(message, "kind", None))
                assert signed.setdefault(key, message.block_id) == message.block_id, key


def test_follower_without_a_validator_key_decides_and_signs_nothing():
    follower = new_core(None)
    signers = [i for i in IDENTITIES if i is not ME][:3]
    feed(follower, [proposal(1, 0, VALUE)] + votes(Kind.PREVOTE, 1, 0, VALUE, signers)
         + votes(Kind.PRECOMMIT, 1, 0, VALUE, signers))
    assert [e.value for e in follower.take_events() if isinstance(e, Committed)] == [VALUE]
    listener = new_core(None)
    feed(listener, [proposal(1, 0, VALUE)] + votes(Kind.PREVOTE, 1, 0, VALUE, signers[:1]))
    listener.handle_timer(10.0)  # propose timeout and re-send: no vote of its own, only what it heard
    sent = [o.message for o in listener.take_outbound()]
    assert sorted(map(encode_message, sent)) == sorted(map(encode_message, [proposal(1, 0, VALUE), Status(1)]
                                                           + votes(Kind.PREVOTE, 1, 0, VALUE, signers[:1])))


def test_a_status_from_a_node_behind_is_answered_with_the_commits_it_lacks():
    node = core_that_decided_two_heights()
    follower = public_key_of(Identity.from_seed(b"a follower"))
    node.handle_message(follower, Status(1), 1.0)
    answered = [o for o in node.take_outbound() if isinstance(o, SendTo)]
    assert [(o.peer, o.message.certificate.height) for o in answered] == [(follower, 1), (follower, 2)]
    node.handle_message(follower, Status(3), 1.0)  # not behind: nothing to send
    assert not node.take_outbound()


@pytest.mark.parametrize("catching_up", [None, ME], ids=["follower", "validator"])
def test_a_node_behind_asks_for_the_next_batch_of_commits_as_soon_as_it_has_executed_one(catching_up):
    """Asking only at each re-send, a node behind got catch_up_batch blocks a second and fell behind a faster
    chain (a validator restarted after a kill -9 stayed at height 50 while the others passed 2,700)."""
    signers = [i for i in IDENTITIES if i is not ME][:3]
    batch = CONFIG.catch_up_batch
    node = new_core(None)
    for height in range(1, batch + 2):
        feed(node, [proposal(height, 0, VALUE)] + votes(Kind.PREVOTE, height, 0, VALUE, signers)
             + votes(Kind.PRECOMMIT, height, 0, VALUE, signers))
    node.take_outbound()
    follower = new_core(catching_up)
    node.handle_message(public_key_of(Identity.from_seed(b"a follower")), Status(1), 1.0)
    commits = [o.message for o in node.take_outbound() if isinstance(o, SendTo)]
    assert [c.certificate.height for c in commits] == list(range(1, batch + 1))
    for commit in commits[:-1]:
        follower.handle_message(KEYS[0], commit, 1.0)
    assert not [o for o in follower.take_outbound() if isinstance(o.message, Status)]
    follower.handle_message(KEYS[0], commits[-1], 1.0)
    assert [o.message for o in follower.take_outbound() if isinstance(o.message, Status)] == [Status(batch + 1)]


def test_others_votes_are_passed_on_when_the_round_times_out_not_on_arrival():
    core = new_core(ME)
    feed(core, [proposal(1, 0, VALUE)])
    core.take_outbound()
    [vote] = votes(Kind.PREVOTE, 1, 0, VALUE, others(1, 0, 1))
    core.handle_message(vote.validator, vote, 0.0)
    # Its signer sent it to every validator: passing it on now would cost n² messages a round.
    assert vote not in broadcasts(core)
    assert core.get_timer() < core.config.rebroadcast_interval  # the round's propose timeout
    core.handle_timer(core.get_timer())
    resent = [o for o in core.take_outbound() if o.message == vote]
    assert len(resent) == 1 and vote.validator in resent[0].exclude  # for those its signer left out


def test_re_sends_come_only_from_a_height_that_lasts_the_re_send_interval():
    """Every message of a new height is sent fresh: at a fixed cadence, a chain deciding heights faster than the
    interval re-sent its current votes, the polka behind its valid value and its Status mid-height."""
    signers = [i for i in IDENTITIES if i is not ME][:3]
    core = new_core(ME)
    interval = CONFIG.rebroadcast_interval
    decided_at = interval * 0.9
    feed(core, [proposal(1, 0, VALUE)] + votes(Kind.PREVOTE, 1, 0, VALUE, signers[:2])
         + votes(Kind.PRECOMMIT, 1, 0, VALUE, signers[:2]), now=decided_at)
    assert core.height == 2
    core.take_outbound()
    core.handle_timer(interval)  # the first interval since start is over, but height 2 began just now
    assert Status(2) not in broadcasts(core)
    core.handle_timer(decided_at + interval)
    assert Status(2) in broadcasts(core)


def test_the_proposal_is_passed_on_when_the_round_times_out_not_on_arrival():
    core = new_core(ME)
    block = proposal(1, 0, VALUE)
    feed(core, [block])
    # Its proposer sent it to every validator: relaying it on arrival cost n - 2 more copies of the block per node.
    assert block not in broadcasts(core)
    feed(core, votes(Kind.PREVOTE, 1, 0, None, others(1, 0)))  # a quorum of prevotes, none a polka
    core.handle_timer(core.get_timer())  # the prevote timeout
    passed_on = [o for o in core.take_outbound() if o.message == block]
    assert len(passed_on) == 1 and block.proposer in passed_on[0].exclude


def test_a_proposal_the_application_refuses_is_not_passed_on():
    core = new_core(ME)
    block = proposal(1, 0, b"bad block")  # CountingApp refuses values that start with b"bad"
    with pytest.raises(InvalidValue):
        feed(core, [block])
    core.handle_timer(core.get_timer())  # the propose timeout: we prevote nil, and pass on the round
    assert block not in broadcasts(core)


class IdleApp(CountingApp):
    """An application that can say it has nothing to propose (the ledger's has_pending)."""

    def __init__(self, pending=False):
        super().__init__()
        self.pending = pending

    def has_pending(self):
        return self.pending


class LimitedApp(CountingApp):
    """Refuses to propose more than ``limit`` values: a core deciding heights in a loop fails, it does not hang."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def propose(self, height):
        assert self.proposed < self.limit, "the core went on proposing within one call"
        return super().propose(height)


def decisions(core):
    return [e.height for e in core.take_events() if isinstance(e, Committed)]


def test_a_validator_holding_a_quorum_alone_decides_one_height_per_commit_wait():
    """Without a commit wait, such a validator decided heights in a loop within one call (fuzz seed 276)."""
    alone = ValidatorSet([Validator(ME_KEY, 1)])
    core = TendermintCore(CHAIN, alone, ME, LimitedApp(5), MemoryConsensusStore(), CONFIG)
    core.start(0.0)
    assert decisions(core) == [1] and core.height == 2
    assert core.get_timer() == pytest.approx(CONFIG.timeout_commit)
    core.handle_timer(CONFIG.timeout_commit / 2)
    assert decisions(core) == []
    core.handle_timer(CONFIG.timeout_commit)
    assert decisions(core) == [2]


def test_the_next_height_starts_after_the_commit_wait_and_keeps_what_arrives_meanwhile():
    proposer = proposer_of(2, 0)
    core = new_core(proposer)
    signers = [i for i in IDENTITIES if i is not proposer][:2]  # with its own votes: a quorum
    feed(core, [proposal(1, 0, VALUE)] + votes(Kind.PREVOTE, 1, 0, VALUE, signers)
         + votes(Kind.PRECOMMIT, 1, 0, VALUE, signers), now=1.0)
    assert decisions(core) == [1]
    core.take_outbound()
    early = votes(Kind.PREVOTE, 2, 0, None, signers[:1])
    feed(core, early, now=1.0)  # a validator done waiting already: counted, not refused
    assert not broadcasts(core, Kind.PROPOSAL) and core.get_timer() == pytest.approx(1.0 + CONFIG.timeout_commit)
    core.handle_timer(1.0 + CONFIG.timeout_commit)
    [sent] = broadcasts(core, Kind.PROPOSAL)
    assert (sent.height, sent.round) == (2, 0)
    with pytest.raises(DuplicateMessage):
        feed(core, early, now=1.1)


def test_an_idle_proposer_waits_for_transactions_or_the_idle_block_interval():
    proposer = proposer_of(1, 0)
    app = IdleApp()
    core = TendermintCore(CHAIN, VALIDATORS, proposer, app, MemoryConsensusStore(), CONFIG)
    core.start(0.0)
    assert not broadcasts(core, Kind.PROPOSAL) and app.proposed == 0
    assert core.get_timer() == pytest.approx(CONFIG.idle_block_interval)
    core.handle_timer(CONFIG.idle_block_interval)  # an empty block all the same: leases expire by block time
    [sent] = broadcasts(core, Kind.PROPOSAL)
    assert (sent.height, sent.round) == (1, 0)
    woken = TendermintCore(CHAIN, VALIDATORS, proposer, IdleApp(), MemoryConsensusStore(), CONFIG)
    woken.start(0.0)
    woken.txs_available(0.3)
    assert [p.height for p in broadcasts(woken, Kind.PROPOSAL)] == [1]


def test_an_idle_proposer_that_left_round_zero_proposes_nothing_when_transactions_arrive():
    proposer = proposer_of(1, 0)
    core = TendermintCore(CHAIN, VALIDATORS, proposer, IdleApp(), MemoryConsensusStore(), CONFIG)
    core.start(0.0)
    later = [i for i in IDENTITIES if i is not proposer and i is not proposer_of(1, 1)][:2]
    feed(core, votes(Kind.PREVOTE, 1, 1, None, later), now=0.1)  # more than f in round 1: we join it
    assert core.round == 1
    core.txs_available(0.2)
    assert not broadcasts(core, Kind.PROPOSAL)  # round 1 is another's


@pytest.mark.parametrize("pending", [False, True])
def test_round_zero_propose_timeout_allows_for_an_idle_proposer_unless_we_hold_transactions(pending):
    core = TendermintCore(CHAIN, VALIDATORS, ME, IdleApp(pending), MemoryConsensusStore(), CONFIG)
    core.start(0.0)
    core.handle_timer(CONFIG.timeout_propose)
    nil_now = [v.block_id for v in broadcasts(core, Kind.PREVOTE)]
    assert nil_now == ([None] if pending else [])
    if not pending:
        core.handle_timer(CONFIG.timeout_propose + CONFIG.idle_block_interval)
        assert [v.block_id for v in broadcasts(core, Kind.PREVOTE)] == [None]
