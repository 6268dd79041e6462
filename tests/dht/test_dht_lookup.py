"""The sans-IO lookup state machine, driven by hand."""

import random

from hypermesh.dht.keys import peer_key
from hypermesh.dht.lookup import Lookup, LookupConfig, QueryState, StragglerThreshold
from hypermesh.dht.messages import PeerInfo
from hypermesh.transport.identity import PeerId


def peers(count, seed=1):
    rng = random.Random(seed)
    return [PeerInfo(PeerId(b"\x12\x20" + rng.randbytes(32))) for _ in range(count)]


def keyed(infos):
    return [(info, peer_key(info.peer_id)) for info in infos]


def run_against(network, lookup, answer, now=0.0, max_rounds=1000):
    """Answer every query at once with ``answer(peer)``: a list of PeerInfo, or None to fail."""
    for _ in range(max_rounds):
        queries = lookup.next_queries(now)
        if not queries:
            break
        for info in queries:
            closer = answer(info)
            if closer is None:
                lookup.on_failure(info.peer_id, now)
            else:
                lookup.on_response(info.peer_id, keyed(closer), now)
    assert lookup.done


def oracle_answer(network, k=20):
    def answer(info):
        # Each peer knows everyone and answers honestly with its k closest to the target.
        return sorted(network, key=lambda p: peer_key(p.peer_id) ^ answer.target)[:k]
    return answer


def test_never_more_than_alpha_in_flight():
    network = peers(200)
    lookup = Lookup(12345, keyed(network[:20]), LookupConfig(alpha=3))
    first = lookup.next_queries(0.0)
    assert len(first) == 3 and lookup.in_flight() == 3
    assert lookup.next_queries(0.0) == []
    lookup.on_response(first[0].peer_id, [], 0.0)
    assert len(lookup.next_queries(0.0)) == 1


def test_finds_the_true_closest():
    network = peers(500)
    target = random.Random(9).getrandbits(256)
    answer = oracle_answer(network)
    answer.target = target
    lookup = Lookup(target, keyed(network[:5]), LookupConfig())
    run_against(network, lookup, answer)
    best = min(network, key=lambda p: peer_key(p.peer_id) ^ target)
    assert lookup.closest_succeeded()[0].info.peer_id == best.peer_id
    assert lookup.queries_sent <= 60


def test_query_timeouts_fail_peers_and_free_slots():
    network = peers(30)
    lookup = Lookup(1, keyed(network), LookupConfig(alpha=2, query_timeout=5.0))
    sent = lookup.next_queries(0.0)
    assert lookup.get_timer() == 5.0
    assert sorted(lookup.handle_timer(5.0), key=str) == sorted((p.peer_id for p in sent), key=str)
    assert all(lookup.candidate(p.peer_id).state is QueryState.FAILED for p in sent)
    assert len(lookup.next_queries(5.0)) == 2
    # A late answer from a failed peer is ignored.
    assert not lookup.on_response(sent[0].peer_id, keyed(peers(5, seed=2)), 6.0)


def test_all_peers_failing_still_terminates():
    network = peers(40)
    lookup = Lookup(7, keyed(network), LookupConfig())
    run_against(network, lookup, lambda info: None)
    assert lookup.closest_succeeded() == []
    assert len(lookup.failed_peers()) == 40


def test_disjoint_paths_never_share_a_peer():
    network = peers(400)
    target = 42
    answer = oracle_answer(network)
    answer.target = target
    lookup = Lookup(target, keyed(network[:9]), LookupConfig(paths=3))
    queried_by_path = {0: set(), 1: set(), 2: set()}
    for _ in range(500):
        queries = lookup.next_queries(0.0)
        if not queries:
            break
        for info in queries:
            queried_by_path[lookup.candidate(info.peer_id).path].add(info.peer_id)
            lookup.on_response(info.peer_id, keyed(answer(info)), 0.0)
    assert lookup.done
    paths = list(queried_by_path.values())
    assert all(paths) and not (paths[0] & paths[1]) and not (paths[1] & paths[2]) and not (paths[0] & paths[2])


def test_finish_stops_querying():
    lookup = Lookup(1, keyed(peers(10)), LookupConfig())
    lookup.next_queries(0.0)
    lookup.finish()
    assert lookup.done and lookup.next_queries(0.0) == [] and lookup.get_timer() is None


def test_settled_once_the_three_closest_have_answered_whatever_is_in_flight():
    """go-libp2p-kad-dht's termination (β = 3): the three closest known have
    answered, while queries to farther peers are still out."""
    network = peers(40)
    target = random.Random(3).getrandbits(256)
    by_distance = sorted(network, key=lambda p: peer_key(p.peer_id) ^ target)
    lookup = Lookup(target, keyed(by_distance[:20]), LookupConfig(alpha=3))
    first = lookup.next_queries(0.0)
    assert [info.peer_id for info in first] == [p.peer_id for p in by_distance[:3]]
    lookup.on_response(first[0].peer_id, [], 0.0)
    lookup.on_response(first[1].peer_id, [], 0.0)
    assert len(lookup.next_queries(0.0)) == 2  # the fourth and fifth closest
    assert not lookup.settled(3)
    lookup.on_response(first[2].peer_id, [], 0.0)
    assert lookup.settled(3) and lookup.in_flight() == 2
    assert not lookup.settled(5) and not lookup.done


def test_not_settled_while_a_closer_peer_an_answer_named_has_not_answered():
    network = peers(40)
    target = random.Random(4).getrandbits(256)
    by_distance = sorted(network, key=lambda p: peer_key(p.peer_id) ^ target)
    closest, seeds = by_distance[0], by_distance[1:21]
    lookup = Lookup(target, keyed(seeds), LookupConfig(alpha=3))
    for info in lookup.next_queries(0.0):
        lookup.on_response(info.peer_id, keyed([closest]), 0.0)
    assert not lookup.settled(3)
    assert closest.peer_id in {info.peer_id for info in lookup.next_queries(0.0)}
    lookup.on_response(closest.peer_id, [], 0.0)
    assert lookup.settled(3)


def closest_first(count, seed):
    network = peers(count, seed)
    target = random.Random(seed).getrandbits(256)
    return target, sorted(network, key=lambda p: peer_key(p.peer_id) ^ target)


def test_a_straggler_gives_its_place_in_flight_to_the_next_candidate():
    target, by_distance = closest_first(40, 5)
    lookup = Lookup(target, keyed(by_distance[:20]), LookupConfig(alpha=3))
    first = lookup.next_queries(0.0)
    assert lookup.next_queries(0.0) == []
    assert lookup.mark_slow(first[0].peer_id)
    assert [info.peer_id for info in lookup.next_queries(0.1)] == [by_distance[3].peer_id]
    assert lookup.in_flight() == 4  # the straggler is still asked, only not waited on


def test_settled_goes_around_a_straggler_among_the_closest():
    target, by_distance = closest_first(40, 6)
    lookup = Lookup(target, keyed(by_distance[:20]), LookupConfig(alpha=3))
    first = lookup.next_queries(0.0)
    lookup.mark_slow(first[0].peer_id)
    for info in first[1:] + lookup.next_queries(0.1):
        lookup.on_response(info.peer_id, [], 0.2)
    assert lookup.settled(3)  # the 2nd, 3rd and 4th closest answered
    assert not lookup.done  # the straggler among the closest is still awaited


def test_done_waits_for_a_straggler_among_the_closest_until_it_fails():
    target, by_distance = closest_first(40, 7)
    lookup = Lookup(target, keyed(by_distance[:5]), LookupConfig(alpha=3, result_size=5))
    first = lookup.next_queries(0.0)
    lookup.mark_slow(first[0].peer_id)
    queries = first[1:]
    for _ in range(10):
        for info in queries:
            lookup.on_response(info.peer_id, [], 0.1)
        queries = lookup.next_queries(0.1)
        if not queries:
            break
    assert lookup.settled(4) and not lookup.done
    lookup.on_failure(first[0].peer_id, 5.0)
    assert lookup.done and lookup.in_flight() == 0


def test_a_stragglers_late_answer_is_taken():
    target, by_distance = closest_first(40, 8)
    lookup = Lookup(target, keyed(by_distance[1:21]), LookupConfig(alpha=3))
    first = lookup.next_queries(0.0)
    lookup.mark_slow(first[0].peer_id)
    assert lookup.on_response(first[0].peer_id, keyed([by_distance[0]]), 3.0)
    assert lookup.candidate(first[0].peer_id).state is QueryState.SUCCEEDED
    assert by_distance[0].peer_id in {info.peer_id for info in lookup.next_queries(3.0)}
    assert lookup.in_flight() == 3


def test_at_most_alpha_stragglers_are_forgiven_at_a_time():
    target, by_distance = closest_first(40, 9)
    lookup = Lookup(target, keyed(by_distance[:20]), LookupConfig(alpha=2))
    asked = lookup.next_queries(0.0)
    for info in asked:
        assert lookup.mark_slow(info.peer_id)
    again = lookup.next_queries(0.1)
    assert len(again) == 2 and not any(lookup.mark_slow(info.peer_id) for info in again)
    assert lookup.next_queries(0.2) == [] and lookup.in_flight() == 4
    assert not lookup.mark_slow(asked[0].peer_id)  # already forgiven


def test_straggler_threshold_follows_the_round_trips_within_its_bounds():
    threshold = StragglerThreshold(floor=0.025, ceiling=10.0)
    assert threshold.seconds == 1.0  # nothing heard yet: RFC 6298's first timeout
    for _ in range(50):
        threshold.observe(0.002)
    assert threshold.seconds == 0.025  # a quiet loopback: the floor
    for rtt in [0.1, 0.3] * 25:
        threshold.observe(rtt)
    assert 0.3 < threshold.seconds < 1.0  # smoothed 0.2 s plus four deviations
    threshold.observe(100.0)
    assert threshold.seconds == 10.0
