"""GET_VALUE through the sans-IO core: what counts toward the quorum, which
record wins, and who is sent the winner afterwards."""

import random
from collections import deque

from multiaddr import Multiaddr

from hypermesh.dht.kademlia import KademliaCore, OperationFinished
from hypermesh.dht.keys import kad_key, peer_key
from hypermesh.dht.messages import KadMessage, MessageType, Record
from hypermesh.dht.records import decode_service_set, encode_service_set, service_key, sign_service_record
from hypermesh.dht.store import MemoryRecordStore
from hypermesh.transport.identity import Identity, PeerId

NOW = 1_700_000_000.0
LAN_ADDR = Multiaddr("/ip4/10.0.0.1/udp/4001/quic-v1").to_bytes()
ALICE = Identity.from_seed(b"alice")
KEY = service_key("relay")


def service_set(seq: int) -> bytes:
    signed = sign_service_record(ALICE, "relay", "/hm/relay/1", [LAN_ADDR], weight=1, seq=seq, now=NOW - 10)
    return encode_service_set([signed])


OLD, NEW = service_set(1), service_set(2)
FORGED = bytearray(NEW)
FORGED[-1] ^= 1
FORGED = bytes(FORGED)


def core_with_peers(count: int, seed: int = 3):
    rng = random.Random(seed)
    core = KademliaCore(PeerId(b"\x12\x20" + rng.randbytes(32)), store=MemoryRecordStore(), now=NOW, rng=rng)
    peers = [PeerId(b"\x12\x20" + rng.randbytes(32)) for _ in range(count)]
    for peer in peers:
        core.peer_seen(peer, (), NOW, LAN_ADDR)
    return core, sorted(peers, key=lambda p: peer_key(p) ^ kad_key(KEY))


def run_get_value(core, answers: dict[PeerId, bytes | None], max_steps: int = 1000):
    """Answer GET_VALUEs one by one with the peer's record (None: no record)
    until the operation ends; returns (result, peers whose answers it had,
    PUT_VALUE requests sent)."""
    op_id = core.get_value(KEY, NOW)
    queue: deque = deque()
    answered, puts, result = [], [], None
    for _ in range(max_steps):
        queue.extend(core.take_outbound())
        if not queue:
            break
        request = queue.popleft()
        peer = request.peer.peer_id
        if request.message.type is MessageType.PUT_VALUE:
            puts.append(request)
        elif result is None:
            answered.append(peer)
            record = Record(KEY, answers[peer]) if answers[peer] is not None else None
            core.handle_response(request.request_id, KadMessage(MessageType.GET_VALUE, key=KEY, record=record), NOW)
        for event in core.take_events():
            if isinstance(event, OperationFinished) and event.result.op_id == op_id:
                result = event.result
    assert result is not None
    return result, answered, puts


def test_junk_and_replayed_answers_do_not_make_a_quorum():
    core, peers = core_with_peers(8)
    junk = {peers[0]: OLD, peers[1]: FORGED, peers[2]: b"\x0a\x03junk"}  # the three closest, asked first
    answers = {peer: junk.get(peer, NEW) for peer in peers}
    result, queried, _ = run_get_value(core, answers)
    assert [r.seq for r in decode_service_set(KEY, result.value, NOW)] == [2]
    assert len([p for p in queried if answers[p] == NEW]) >= core.config.get_value_quorum
    assert result.values_received >= 1 + core.config.get_value_quorum  # OLD and NEW are valid; junk is not


def test_an_answer_outdated_by_a_later_one_stops_counting():
    core, peers = core_with_peers(8)
    # The closest two hold the old entry; everyone else the new one, which
    # outdates theirs: one NEW and two OLD answers are no quorum.
    answers = {peer: OLD if i < 2 else NEW for i, peer in enumerate(peers)}
    result, queried, _ = run_get_value(core, answers)
    assert [r.seq for r in decode_service_set(KEY, result.value, NOW)] == [2]
    assert len([p for p in queried if answers[p] == NEW]) >= core.config.get_value_quorum


def test_peers_that_answered_stale_or_invalid_records_are_sent_the_best():
    core, peers = core_with_peers(8)
    stale = {peers[0]: OLD, peers[1]: FORGED}
    answers = {peer: stale.get(peer, NEW) for peer in peers}
    result, queried, puts = run_get_value(core, answers)
    assert {(r.peer.peer_id, r.message.record.value) for r in puts} == {(peer, result.value) for peer in stale}
    assert result.repaired == 2
    # Peers that had the best record, or none at all, are left alone.
    assert not [r for r in puts if answers[r.peer.peer_id] == NEW]


def test_a_refused_repair_does_not_count_against_the_peer():
    core, peers = core_with_peers(8)
    result, _, puts = run_get_value(core, {peer: OLD if peer == peers[0] else NEW for peer in peers})
    [repair] = puts
    core.handle_failure(repair.request_id, NOW)  # e.g. its set is full: it resets the stream
    assert core.routing.get(peers[0]).failures == 0


def test_local_record_newer_than_every_answer_wins_and_is_spread():
    core, peers = core_with_peers(5)
    core.store.put_value(KEY, NEW, NOW + 3600, NOW)
    result, queried, puts = run_get_value(core, {peer: OLD for peer in peers})
    assert result.value == NEW
    assert {r.peer.peer_id for r in puts} == set(queried) == set(peers)
