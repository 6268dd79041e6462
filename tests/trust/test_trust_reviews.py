"""The review board: credibility spread from the anchors, misleading reviewers, and what the believed report."""

import numpy as np
import pytest

from hypermesh.trust.eigentrust import GlobalTrust
from hypermesh.trust.reviews import ReviewBoard

VALIDATOR = "validator"
HONEST = "honest"
LIAR = "liar"
GOOD = [f"good{i}" for i in range(6)]
BAD = [f"bad{i}" for i in range(6)]


def board_with_validator_reviews() -> ReviewBoard:
    """The validator found GOOD serving well and BAD serving badly, five times each."""
    board = ReviewBoard(GlobalTrust())
    for peer in GOOD:
        board.record(VALIDATOR, peer, 5, 0)
    for peer in BAD:
        board.record(VALIDATOR, peer, 0, 5)
    return board


def reported(board: ReviewBoard, peer) -> tuple[float, float, bool]:
    satisfaction, evidence, misleading = board.reported(np.array([board.trust.index_of(peer)]))
    return float(satisfaction[0]), float(evidence[0]), bool(misleading[0])


def test_a_reviewer_who_agrees_with_the_anchors_is_believed_and_one_who_contradicts_them_misleads():
    board = board_with_validator_reviews()
    for peer in GOOD:
        board.record(HONEST, peer, 3, 0)
    for peer in BAD:
        board.record(HONEST, peer, 0, 3)
        board.record(LIAR, peer, 1000, 0)  # a spy's praise of the collective it covers for
    board.recompute(anchors=[VALIDATOR])
    assert board.credibility(VALIDATOR) == 1.0
    assert board.credibility(HONEST) > 0.7
    assert board.credibility(LIAR) == 0.0
    assert board.is_misleading(LIAR) and not board.is_misleading(HONEST)


def test_belief_spreads_beyond_what_the_anchors_saw():
    board = board_with_validator_reviews()
    newcomer = "reviewed only by the honest reviewer"
    for peer in GOOD:
        board.record(HONEST, peer, 3, 0)
    board.record(HONEST, newcomer, 4, 0)
    board.recompute(anchors=[VALIDATOR])
    satisfaction, evidence, _ = reported(board, newcomer)
    assert satisfaction == 1.0 and evidence > 0


def test_a_swarm_reviewing_itself_is_not_heard_however_large():
    board = board_with_validator_reviews()
    swarm = [f"sybil{i}" for i in range(200)]
    for i, sybil in enumerate(swarm):
        for ally in swarm[i + 1 : i + 11]:
            board.record(sybil, ally, 1000, 0)
    board.recompute(anchors=[VALIDATOR])
    assert max(board.credibility(sybil) for sybil in swarm) == 0.0
    assert reported(board, swarm[50]) == (0.5, 0.0, False)


def test_a_bad_providers_praise_of_honest_peers_does_not_make_its_word_count():
    # The EigenTrust paper's individual malicious peers: they serve badly, yet praise honest peers too.
    board = board_with_validator_reviews()
    cheat = BAD[0]
    for peer in GOOD:
        board.record(cheat, peer, 5, 0)
    board.record(cheat, BAD[1], 1000, 0)
    board.recompute(anchors=[VALIDATOR])
    assert board.credibility(cheat) == 0.0
    assert reported(board, BAD[1])[0] == 0.0


def test_reported_quality_follows_reviews_between_recomputes():
    board = board_with_validator_reviews()
    board.recompute(anchors=[VALIDATOR])
    assert reported(board, GOOD[0])[0] == 1.0
    board.record(VALIDATOR, GOOD[0], 5, 5)
    assert reported(board, GOOD[0])[0] == pytest.approx(0.5)
    assert reported(board, "never reviewed") == (0.5, 0.0, False)


def test_reviews_of_oneself_are_ignored_and_a_newer_review_replaces_the_older():
    board = ReviewBoard(GlobalTrust())
    board.record(VALIDATOR, VALIDATOR, 9, 0)
    board.record(VALIDATOR, GOOD[0], 1, 0)
    board.record(VALIDATOR, GOOD[0], 2, 3)
    assert board.reviewed_by(VALIDATOR) == {GOOD[0]: (2, 3)}
    assert board.reviewers(GOOD[0]) == {VALIDATOR: (2, 3)}
