"""The routing table: buckets, replacement cache, liveness, diversity caps."""

import random

from multiaddr import Multiaddr

from hypermesh.dht.keys import bucket_index, peer_key
from hypermesh.dht.routing import ObserveResult, RoutingConfig, RoutingTable, ip_group
from hypermesh.transport.identity import PeerId


def make_peer(rng):
    return PeerId(b"\x12\x20" + rng.randbytes(32))


def addr(ip):
    return Multiaddr(f"/ip4/{ip}/udp/4001/quic-v1").to_bytes()


def fill_bucket(table, rng, index, count, now=0.0, group_of=lambda i: None):
    peers = []
    while len(peers) < count:
        peer = make_peer(rng)
        if bucket_index(table.local_key, peer_key(peer)) == index:
            table.observe(peer, peer_key(peer), (), now, group_of(len(peers)))
            peers.append(peer)
    return peers


def test_ip_groups():
    assert ip_group(addr("8.8.8.8")) == "8.8.8.0/24"
    assert ip_group(Multiaddr("/ip6/2001:db8:1:2::1/udp/1/quic-v1").to_bytes(), exempt_private=False) == "2001:db8:1::/48"
    assert ip_group(addr("127.0.0.1")) is None
    assert ip_group(addr("192.168.1.1")) is None
    assert ip_group(addr("192.168.1.1"), exempt_private=False) == "192.168.1.0/24"
    assert ip_group(b"\xff\xff") is None
    assert ip_group(Multiaddr("/dns4/example.com/udp/1/quic-v1").to_bytes()) is None


def test_full_bucket_parks_newcomers_and_asks_for_a_liveness_check():
    rng = random.Random(1)
    table = RoutingTable(peer_key(make_peer(rng)), RoutingConfig(k=4, replacement_cache_size=2))
    members = fill_bucket(table, rng, 255, 4, now=0.0)
    assert len(table) == 4
    newcomer = fill_bucket(RoutingTable(table.local_key), rng, 255, 1)[0]
    outcome, stalest = table.observe(newcomer, peer_key(newcomer), (), 100.0)
    assert outcome is ObserveResult.PENDING and stalest.peer_id == members[0]
    assert newcomer not in table
    # The check failed: the stalest goes, the newcomer takes its place.
    promoted = table.remove(members[0])
    assert promoted.peer_id == newcomer and newcomer in table and members[0] not in table


def test_liveness_checks_are_rate_limited_per_bucket():
    rng = random.Random(2)
    table = RoutingTable(peer_key(make_peer(rng)), RoutingConfig(k=2, liveness_check_gap=60))
    fill_bucket(table, rng, 255, 2, now=0.0)
    extra = fill_bucket(RoutingTable(table.local_key), rng, 255, 3)
    assert table.observe(extra[0], peer_key(extra[0]), (), 100.0)[1] is not None
    assert table.observe(extra[1], peer_key(extra[1]), (), 110.0)[1] is None
    assert table.observe(extra[2], peer_key(extra[2]), (), 170.0)[1] is not None


def test_seen_peer_moves_to_the_tail():
    rng = random.Random(3)
    table = RoutingTable(peer_key(make_peer(rng)), RoutingConfig(k=3))
    members = fill_bucket(table, rng, 255, 3)
    assert table.observe(members[0], peer_key(members[0]), (), 5.0)[0] is ObserveResult.UPDATED
    assert [e.peer_id for e in table.bucket(255).entries] == [members[1], members[2], members[0]]


def test_ip_prefix_cap_per_bucket_and_table():
    rng = random.Random(4)
    table = RoutingTable(peer_key(make_peer(rng)), RoutingConfig(max_per_group_per_bucket=2, max_per_group_in_table=3))
    fill_bucket(table, rng, 255, 5, group_of=lambda i: "1.2.3.0/24")
    assert len(table.bucket(255).entries) == 2
    fill_bucket(table, rng, 254, 5, group_of=lambda i: "1.2.3.0/24")
    assert len(table) == 3  # table-wide cap
    fill_bucket(table, rng, 254, 2, group_of=lambda i: f"9.9.{i}.0/24")
    assert len(table) == 5


def test_failures_evict_after_threshold_or_when_a_replacement_waits():
    rng = random.Random(5)
    table = RoutingTable(peer_key(make_peer(rng)), RoutingConfig(k=2, max_failures=2))
    a, b = fill_bucket(table, rng, 255, 2)
    assert not table.record_failure(a)
    assert table.record_failure(a)
    assert a not in table
    fill_bucket(table, rng, 255, 2)  # one fills the slot, one waits as replacement
    assert table.record_failure(b)  # evicted at once: a replacement is waiting


def test_closest_matches_brute_force():
    rng = random.Random(6)
    table = RoutingTable(peer_key(make_peer(rng)))
    for _ in range(600):
        peer = make_peer(rng)
        table.observe(peer, peer_key(peer), (), 0.0)
    entries = table.entries()
    for _ in range(50):
        target = rng.getrandbits(256)
        expected = sorted(entries, key=lambda e: e.key ^ target)[:20]
        assert [e.peer_id for e in table.closest(target, 20)] == [e.peer_id for e in expected]
    excluded = expected[0].peer_id
    assert excluded not in [e.peer_id for e in table.closest(target, 20, exclude=excluded)]


def test_refresh_and_staleness():
    rng = random.Random(7)
    table = RoutingTable(peer_key(make_peer(rng)))
    fill_bucket(table, rng, 255, 1, now=0.0)
    fill_bucket(table, rng, 250, 1, now=500.0)
    due = table.buckets_to_refresh(1000.0, 600.0)
    assert due[0] == 255 and 249 in due and 248 not in due
    table.mark_refreshed(table.entries()[0].key, 1000.0)
    assert 255 not in table.buckets_to_refresh(1000.0, 600.0)
    assert [e.last_seen for e in table.stale_entries(1000.0, 600.0)] == [0.0]


from hypothesis import given, strategies as st  # noqa: E402

OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["observe", "remove", "fail"]), st.integers(0, 80), st.integers(0, 3), st.floats(0, 1000)),
    max_size=300,
)


@given(OPERATIONS)
def test_invariants_hold_under_any_sequence_of_events(operations):
    rng = random.Random(0)
    config = RoutingConfig(k=4, replacement_cache_size=2, max_per_group_per_bucket=2, max_per_group_in_table=5)
    table = RoutingTable(peer_key(make_peer(rng)), config)
    peers = [make_peer(rng) for _ in range(81)]
    for action, which, group, now in operations:
        peer = peers[which]
        if action == "observe":
            table.observe(peer, peer_key(peer), (), now, f"10.{group}.0.0/24" if group else None)
        elif action == "remove":
            table.remove(peer)
        else:
            table.record_failure(peer)
    entries = table.entries()
    assert len({e.peer_id for e in entries}) == len(entries) == len(table)
    for index, bucket in table.buckets.items():
        assert len(bucket.entries) <= config.k
        assert all(bucket_index(table.local_key, e.key) == index for e in bucket.entries)
        assert (index in table._nonempty) == bool(bucket.entries)
        groups = [e.ip_group for e in bucket.entries if e.ip_group]
        assert all(groups.count(g) <= config.max_per_group_per_bucket for g in groups)
    all_groups = [e.ip_group for e in entries if e.ip_group]
    assert all(all_groups.count(g) <= config.max_per_group_in_table for g in all_groups)


def test_a_full_bucket_of_peers_heard_from_within_the_interval_needs_no_refresh():
    # A lookup there could add nobody: every place is taken by a peer known alive.
    rng = random.Random(8)
    table = RoutingTable(peer_key(make_peer(rng)))
    full = fill_bucket(table, rng, 255, table.config.k, now=500.0)
    fill_bucket(table, rng, 254, 3, now=500.0)
    assert 255 not in table.buckets_to_refresh(1000.0, 600.0)
    assert 254 in table.buckets_to_refresh(1000.0, 600.0)
    # Once one of them has not been heard from within the interval, it is due again.
    table.observe(full[0], peer_key(full[0]), (), 1000.0)
    assert 255 in table.buckets_to_refresh(1200.0, 600.0)


def test_marking_a_covered_ball_refreshes_every_bucket_inside_it():
    rng = random.Random(9)
    table = RoutingTable(peer_key(make_peer(rng)))
    for index in (255, 252, 250, 248):
        fill_bucket(table, rng, index, 1, now=0.0)
    # Every peer within distance 2**251 was seen: buckets 250 and below lie inside.
    table.mark_covered(1 << 251, 1000.0)
    due = table.buckets_to_refresh(1000.0, 600.0)
    assert 255 in due and 252 in due and 251 in due
    assert not set(due) & set(range(247, 251))
