"""The black-hole detector (RFC 8899 §4.3), sans-IO."""

from hypermesh.transport.mtu import BASE_DATAGRAM_SIZE, BLACK_HOLE_LOSS_EVENTS, BlackHoleDetector

LARGE, SMALL = 8000, BASE_DATAGRAM_SIZE


def test_repeated_losses_of_large_datagrams_with_none_acknowledged_are_a_black_hole():
    detector = BlackHoleDetector()
    verdicts = [detector.on_loss_event([LARGE, LARGE]) for _ in range(BLACK_HOLE_LOSS_EVENTS)]
    assert verdicts == [False] * (BLACK_HOLE_LOSS_EVENTS - 1) + [True]


def test_one_large_acknowledgement_between_losses_means_the_path_still_carries_them():
    detector = BlackHoleDetector()
    for _ in range(5 * BLACK_HOLE_LOSS_EVENTS):
        assert not detector.on_loss_event([LARGE] * 20)  # a burst of congestion loss
        detector.on_acked(LARGE)


def test_small_datagram_losses_and_acks_do_not_count():
    detector = BlackHoleDetector()
    for _ in range(5 * BLACK_HOLE_LOSS_EVENTS):
        assert not detector.on_loss_event([SMALL, SMALL])
    for _ in range(BLACK_HOLE_LOSS_EVENTS - 1):
        detector.on_loss_event([LARGE])
        detector.on_acked(SMALL)  # small packets getting through prove nothing about large ones
    assert detector.on_loss_event([LARGE])
