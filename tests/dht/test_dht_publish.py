"""Publishing provider records: paced to the receivers' limits, confirmed, and honest about failures."""

import dataclasses
import heapq
import logging
import math

from hypermesh.dht.keys import Cid, kad_key
from hypermesh.dht.messages import MessageType
from hypermesh.dht.reprovide import LEVEL_NAMES
from hypermesh.dht.sim import SIM_KAD_CONFIG, build_joined_network, build_network

SWEEP_LIMIT = 6 * 3600.0  # virtual seconds; a sweep that needs longer has failed anyway


def provide_and_settle(sim, publisher, keys):
    publisher.core.provide(keys, sim.now)
    sim._sync(publisher)
    started = sim.now
    sim.run_until(sim.now + SWEEP_LIMIT, stop=lambda: publisher.core.reprovider.idle() and sim.now > started + 2)
    assert publisher.core.reprovider.idle()


def share_held_by_closest(sim, publisher, keys):
    """Of each key's k closest peers (the publisher aside), the share that holds its record."""
    others = [n for n in sim.online_nodes() if n is not publisher]
    held = total = 0
    for key in keys:
        position = kad_key(key)
        for node in heapq.nsmallest(SIM_KAD_CONFIG.k, others, key=lambda n: n.key ^ position):
            total += 1
            held += any(p.peer_id == publisher.peer_id for p in node.core.store.get_providers(key, sim.now, 20))
    return held / total


def test_a_provide_larger_than_the_receivers_burst_reaches_the_closest_peers():
    # 3,000 records on 60 peers: each peer is sent ~1,000 ADD_PROVIDERs, more
    # than its per-peer burst (400) lets through at once.
    sim = build_network(21, 60)
    publisher = sim.nodes[0]
    keys = [Cid.for_string(f"bulk-{i}").multihash for i in range(3_000)]
    provide_and_settle(sim, publisher, keys)
    published = publisher.core.store.local_provides()
    assert all(published[key] > 0 for key in keys)
    assert share_held_by_closest(sim, publisher, sim.rng.sample(keys, 100)) >= 0.95
    assert sum(n.core.stats.rate_limited for n in sim.nodes) == 0
    # Every lookup the reprovider ran is counted under its level.
    levels = {level: publisher.core.metrics.value("hypermesh_dht_reprovide_lookups_total", {"level": level}) or 0
              for level in LEVEL_NAMES}
    assert levels["region"] > 0 and sum(levels.values()) == publisher.core.stats.operations["provide"]


def test_records_the_receivers_drop_are_not_marked_published_and_are_reported(caplog):
    kad = dataclasses.replace(SIM_KAD_CONFIG, first_publish_grace=600.0)
    sim = build_network(22, 40, kad=kad)
    publisher = sim.nodes[0]
    # Every other peer answers lookups but silently drops ADD_PROVIDER.
    sim.make_adversarial(sim.nodes[1:])
    keys = [Cid.for_string(f"dropped-{i}").multihash for i in range(50)]
    with caplog.at_level(logging.WARNING, logger="hypermesh.dht.reprovide"):
        provide_and_settle(sim, publisher, keys)
    published = publisher.core.store.local_provides()
    assert not [key for key in keys if published[key] > 0]
    assert "not confirmed" in caplog.text
    assert publisher.core.metrics.value("hypermesh_dht_provide_unconfirmed_keys") == len(keys)
    sim.run_until(sim.now + 3600.0)
    # Never published counts as overdue: nobody can find these records.
    assert publisher.core.reprovider.report_overdue(sim.now) == len(keys)


def test_nodes_sharing_a_process_report_their_own_metrics():
    sim = build_network(23, 40, kad=dataclasses.replace(SIM_KAD_CONFIG, first_publish_grace=600.0))
    dropping, honest = sim.nodes[1:20], sim.nodes[20:]
    sim.make_adversarial(dropping + honest[1:])  # so that alice's records are lost; bob provides nothing
    alice, bob = sim.nodes[0], honest[0]
    provide_and_settle(sim, alice, [Cid.for_string(f"alice-{i}").multihash for i in range(30)])
    sim.run_until(sim.now + 3600.0)
    for node in (alice, bob):
        node.core.reprovider.report_overdue(sim.now)
    assert alice.core.metrics.value("hypermesh_dht_provide_unconfirmed_keys") == 30
    assert alice.core.metrics.value("hypermesh_dht_reprovide_overdue_keys") == 30
    assert bob.core.metrics.value("hypermesh_dht_provide_unconfirmed_keys") == 0
    assert bob.core.metrics.value("hypermesh_dht_reprovide_overdue_keys") == 0
    assert alice.core.metrics.registry is not bob.core.metrics.registry


def test_each_record_reaches_its_closest_peers_in_a_network_the_protocol_built():
    # Tables built by joins and refreshes are complete near each node, so
    # every answer near a region lists the same k peers: a region lookup's
    # farther finds are chance, and placement must not rely on them.
    sim = build_joined_network(24, 120)
    publisher = sim.nodes[0]
    keys = [Cid.for_string(f"joined-{i}").multihash for i in range(1_500)]
    provide_and_settle(sim, publisher, keys)
    others = [n for n in sim.online_nodes() if n is not publisher]
    held = []
    for key in sim.rng.sample(keys, 150):
        position = kad_key(key)
        closest = heapq.nsmallest(SIM_KAD_CONFIG.k, others, key=lambda n: n.key ^ position)
        held.append(sum(any(p.peer_id == publisher.peer_id for p in n.core.store.get_providers(key, sim.now, 20))
                        for n in closest))
    assert sum(held) >= 0.995 * SIM_KAD_CONFIG.k * len(held)
    # Trusting the whole lookup left 10 of these 150 on 17 or 18 peers; now 2 on 18.
    assert sum(h < 0.95 * SIM_KAD_CONFIG.k for h in held) <= 0.02 * len(held)


def provide_results(sim, publisher, keys):
    """Provide ``keys``, run until published; the provide operations' results."""
    publisher.results.clear()
    provide_and_settle(sim, publisher, keys)
    return [r for r in publisher.results.values() if r.kind == "provide"]


def test_a_provide_of_one_key_collects_2k_peers_not_a_regions_64():
    # 64 peers help place many keys of a region at once; a lone key needs its
    # k closest and a margin against hostile peers (see _region_lookup_size).
    sim = build_network(25, 200)
    publisher = sim.nodes[0]
    key = Cid.for_string("a single key").multihash
    [provided] = provide_results(sim, publisher, [key])
    assert provided.stored == 1
    assert provided.queries <= 2 * SIM_KAD_CONFIG.k + 2 * SIM_KAD_CONFIG.alpha


def test_a_region_lookup_collecting_more_than_k_peers_asks_as_many_more_at_a_time():
    # A lookup must hear from every peer it collects: with alpha in flight,
    # 64 peers took over 20 round trips where a lookup of k takes about 7.
    sim = build_network(26, 200)
    publisher = sim.nodes[0]
    keys = [Cid.for_string(f"region-{i}").multihash for i in range(200)]
    core = publisher.core
    core.provide(keys, sim.now)
    core.handle_timer(sim.now + core.reprovider.coalesce_delay)
    first_round = [r for r in core.take_outbound() if r.message.type is MessageType.FIND_NODE and r.message.key in keys]
    batches = publisher.core.config.max_parallel_provide_batches
    wanted = SIM_KAD_CONFIG.alpha * math.ceil(SIM_KAD_CONFIG.provide_lookup_size / SIM_KAD_CONFIG.k)
    assert len(first_round) == batches * wanted


def test_a_publication_is_confirmed_without_waiting_for_peers_gone_silent_after_its_lookup():
    # Two of the key's closest peers (both probed) vanish once the lookup has
    # placed the record: their ADD_PROVIDERs and probes can only time out.
    # The other probes decide; nobody waits out those timeouts.
    sim = build_network(27, 200)
    publisher = sim.nodes[0]
    key = Cid.for_string("stragglers").multihash
    publisher.core.provide([key], sim.now)
    sim._sync(publisher)
    sim.run_until(sim.now + SWEEP_LIMIT, stop=lambda: sim.delivered["ADD_PROVIDER"] > 0)
    position = kad_key(key)
    others = [n for n in sim.nodes if n is not publisher]
    for node in heapq.nsmallest(2, others, key=lambda n: n.key ^ position):
        sim.crash(node)
    gone_silent = sim.now
    sim.run_until(sim.now + SWEEP_LIMIT, stop=lambda: publisher.core.store.local_provides()[key] > 0)
    assert publisher.core.store.local_provides()[key] > 0
    assert sim.now - gone_silent < SIM_KAD_CONFIG.query_timeout


def test_a_provide_whose_lookup_timed_out_places_no_record_where_it_stopped():
    """Under overload a provide's lookup can reach its deadline having heard
    only from peers on the way: its key goes back to the reprovider
    unplaced, not to those peers (whom the confirmation probes would then
    ask, finding the record they were just sent)."""
    from hypermesh.dht.lookup import Lookup, LookupConfig
    from hypermesh.dht.messages import PeerInfo
    from hypermesh.dht.operations import ProvideBatchOperation
    from hypermesh.transport.identity import Identity

    key = Cid.for_string("cut short").multihash
    target = kad_key(key)
    on_the_way = [PeerInfo(Identity.generate().peer_id) for _ in range(8)]
    lookup = Lookup(target, [(info, kad_key(info.peer_id.multihash)) for info in on_the_way], LookupConfig(alpha=8))
    for info in lookup.next_queries(0.0):
        lookup.on_response(info.peer_id, [], 0.0)
    operation = ProvideBatchOperation(1, key, lookup, 60.0, [key], k=20)
    operation.timed_out = True  # as KademliaCore sets it at the operation's deadline
    operation.fanout(on_the_way[0])
    assert operation.assignments == []
    assert operation.placed_keys() == [] and operation.result().unplaced_keys == [key]
