"""Value records: signatures, expiry, clock skew, sequence numbers, namespaces."""

from hypothesis import given, settings, strategies as st
from multiaddr import Multiaddr
import pytest

from dht_multiaddrs import JUNK_ADDRS, REAL_WORLD_ADDRS, UNUSABLE_ADDRS
from hypermesh.dht import kad_pb2
from hypermesh.dht.records import (
    MAX_CLOCK_SKEW,
    MAX_SERVICE_ADDRS,
    MAX_SERVICE_INSTANCES,
    NamespacedValidator,
    RecordError,
    decode_service_set,
    encode_service_set,
    pk_key,
    service_key,
    sign_service_record,
    verify_service_entry,
)
from hypermesh.transport.identity import Identity

NOW = 1_700_000_000.0
ALICE = Identity.from_seed(b"alice")
BOB = Identity.from_seed(b"bob")
ADDR = Multiaddr("/ip4/1.2.3.4/udp/4001/quic-v1").to_bytes()
VALIDATOR = NamespacedValidator()
KEY = service_key("relay")


def entry(identity=ALICE, *, seq=1, now=NOW, ttl=3600.0, name="relay", weight=10, addrs=(ADDR,)):
    return sign_service_record(identity, name, "/hm/relay/1", list(addrs), weight=weight, seq=seq, now=now, ttl=ttl)


def as_set(*entries):
    return encode_service_set(list(entries))


def test_signed_record_verifies_with_all_fields():
    record = verify_service_entry(entry(), "relay", NOW)
    assert record.peer_id == ALICE.peer_id and record.addrs == (ADDR,)
    assert (record.protocol, record.weight, record.seq) == ("/hm/relay/1", 10, 1)
    assert record.expires_at == int(NOW + 3600)


def test_tampered_record_is_rejected():
    signed = kad_pb2.SignedServiceRecord()
    signed.ParseFromString(entry())
    body = kad_pb2.ServiceRecordBody()
    body.ParseFromString(signed.body)
    body.weight = 65000
    signed.body = body.SerializeToString()
    with pytest.raises(RecordError, match="signature"):
        verify_service_entry(signed.SerializeToString(), "relay", NOW)


def test_unsigned_record_is_rejected():
    signed = kad_pb2.SignedServiceRecord()
    signed.ParseFromString(entry())
    signed.signature = b""
    with pytest.raises(RecordError, match="unsigned"):
        verify_service_entry(signed.SerializeToString(), "relay", NOW)


def test_record_signed_by_someone_else_is_rejected():
    alice = kad_pb2.SignedServiceRecord()
    alice.ParseFromString(entry(ALICE))
    bob = kad_pb2.SignedServiceRecord()
    bob.ParseFromString(entry(BOB))
    alice.public_key, alice.signature = bob.public_key, bob.signature
    with pytest.raises(RecordError):
        verify_service_entry(alice.SerializeToString(), "relay", NOW)


def test_expired_record_is_rejected():
    with pytest.raises(RecordError, match="expired"):
        verify_service_entry(entry(ttl=60), "relay", NOW + 61)


def test_record_from_the_future_is_rejected():
    future = entry(now=NOW + MAX_CLOCK_SKEW + 60)
    with pytest.raises(RecordError, match="future"):
        verify_service_entry(future, "relay", NOW)
    verify_service_entry(entry(now=NOW + MAX_CLOCK_SKEW - 60), "relay", NOW)  # skew within bounds


def test_record_under_the_wrong_name_is_rejected():
    with pytest.raises(RecordError):
        VALIDATOR.validate(service_key("other"), as_set(entry()), NOW)


def test_older_sequence_number_cannot_replace_newer():
    stored = VALIDATOR.merge(KEY, None, as_set(entry(seq=5)), NOW)
    with pytest.raises(RecordError):
        VALIDATOR.merge(KEY, stored, as_set(entry(seq=4)), NOW)
    newer = VALIDATOR.merge(KEY, stored, as_set(entry(seq=6, weight=99)), NOW)
    assert [r.weight for r in decode_service_set(KEY, newer, NOW)] == [99]


def test_sets_merge_per_peer():
    merged = VALIDATOR.merge(KEY, as_set(entry(ALICE)), as_set(entry(BOB)), NOW)
    assert {r.peer_id for r in decode_service_set(KEY, merged, NOW)} == {ALICE.peer_id, BOB.peer_id}


def test_expired_entries_drop_out_of_merged_sets():
    stored = VALIDATOR.merge(KEY, None, as_set(entry(ALICE, ttl=60)), NOW)
    merged = VALIDATOR.merge(KEY, stored, as_set(entry(BOB)), NOW + 120)
    assert [r.peer_id for r in decode_service_set(KEY, merged, NOW + 120)] == [BOB.peer_id]


def test_full_service_keeps_existing_instances():
    identities = [Identity.from_seed(b"s%d" % i) for i in range(MAX_SERVICE_INSTANCES)]
    stored = None
    for identity in identities:
        stored = VALIDATOR.merge(KEY, stored, as_set(entry(identity)), NOW)
    with pytest.raises(RecordError):
        VALIDATOR.merge(KEY, stored, as_set(entry(ALICE)), NOW)
    VALIDATOR.merge(KEY, stored, as_set(entry(identities[0], seq=2)), NOW)  # listed peers still update


def test_public_key_records():
    VALIDATOR.validate(pk_key(ALICE.peer_id), ALICE.public_key_proto, NOW)
    with pytest.raises(RecordError):
        VALIDATOR.validate(pk_key(ALICE.peer_id), BOB.public_key_proto, NOW)
    with pytest.raises(RecordError):
        VALIDATOR.validate(b"/pk/garbage", ALICE.public_key_proto, NOW)


def test_unknown_namespace_and_garbage_are_rejected():
    with pytest.raises(RecordError):
        VALIDATOR.validate(b"/ipns/x", b"value", NOW)
    with pytest.raises(RecordError):
        VALIDATOR.validate(KEY, b"\xff\xff\xff", NOW)
    with pytest.raises(RecordError):
        VALIDATOR.validate(KEY, b"", NOW)
    with pytest.raises(RecordError):
        service_key("bad/name")


def test_signing_refuses_what_verification_would_reject():
    for kwargs in ({"protocol": ""}, {"weight": 70000}, {"ttl": 10 * 24 * 3600.0}):
        args = {"protocol": "/p", "weight": 1, "ttl": 60.0, **kwargs}
        with pytest.raises(RecordError):
            sign_service_record(ALICE, "relay", args["protocol"], [ADDR], weight=args["weight"], seq=1, now=NOW, ttl=args["ttl"])


def test_an_unusable_address_costs_only_itself_not_its_entry_or_the_set():
    mixed = [a for pair in zip(REAL_WORLD_ADDRS, UNUSABLE_ADDRS) for a in pair]
    kept = entry(ALICE, addrs=mixed)
    unusable = entry(BOB, addrs=UNUSABLE_ADDRS)  # nothing usable left: this entry alone is dropped
    value = as_set(kept, unusable)
    VALIDATOR.validate(KEY, value, NOW)
    records = decode_service_set(KEY, value, NOW)
    assert [(r.peer_id, r.addrs) for r in records] == [(ALICE.peer_id, tuple(REAL_WORLD_ADDRS[: len(UNUSABLE_ADDRS)]))]
    assert records[0].signed == kept  # passed on as signed, addresses we cannot read included
    assert decode_service_set(KEY, VALIDATOR.merge(KEY, None, value, NOW), NOW) == records
    with pytest.raises(RecordError):
        VALIDATOR.validate(KEY, as_set(unusable), NOW)


FUZZ_IDENTITIES = [Identity.from_seed(b"fuzz-%d" % i) for i in range(6)]
USABLE = REAL_WORLD_ADDRS + [ADDR]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.lists(st.one_of(st.sampled_from(USABLE), JUNK_ADDRS), max_size=MAX_SERVICE_ADDRS),
        min_size=1,
        max_size=len(FUZZ_IDENTITIES),
    )
)
def test_fuzz_service_set_decoder_keeps_exactly_the_usable_addresses(declared):
    value = as_set(*(entry(identity, addrs=addrs) for identity, addrs in zip(FUZZ_IDENTITIES, declared)))
    expected = {}
    for identity, addrs in zip(FUZZ_IDENTITIES, declared):
        usable = tuple(a for a in addrs if a in USABLE)
        if usable or not addrs:
            expected[identity.peer_id] = usable
    assert {r.peer_id: r.addrs for r in decode_service_set(KEY, value, NOW)} == expected
    if expected:
        merged = VALIDATOR.merge(KEY, None, value, NOW)
        assert {r.peer_id: r.addrs for r in decode_service_set(KEY, merged, NOW)} == expected
    else:
        with pytest.raises(RecordError):
            VALIDATOR.validate(KEY, value, NOW)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_fuzz_mangled_service_sets_only_raise_record_error(data):
    value = bytearray(as_set(entry(ALICE, addrs=REAL_WORLD_ADDRS[:3]), entry(BOB)))
    for _ in range(data.draw(st.integers(1, 8))):
        position = data.draw(st.integers(0, len(value) - 1))
        value[position] = data.draw(st.integers(0, 255))
    value = bytes(value[: data.draw(st.integers(0, len(value)))])
    for record in decode_service_set(KEY, value, NOW) if _parses(value) else []:
        assert record.peer_id in (ALICE.peer_id, BOB.peer_id)
    try:
        VALIDATOR.validate(KEY, value, NOW)
    except RecordError:
        pass


def _parses(value):
    try:
        decode_service_set(KEY, value, NOW)
    except RecordError:
        return False
    return True


def test_each_entry_signature_is_checked_once_however_often_the_set_is_merged(monkeypatch):
    """A PUT to a name with many instances must not re-verify every stored entry (and again for its expiry)."""
    from hypermesh.dht import records

    checks = []

    def counting_verify(public_key, data, signature):
        checks.append(signature)
        return real_verify(public_key, data, signature)

    real_verify = records.verify_signature
    monkeypatch.setattr(records, "verify_signature", counting_verify)
    records.forget_verified_signatures()
    identities = [Identity.from_seed(b"once%d" % i) for i in range(20)]
    stored = None
    for identity in identities:
        stored = VALIDATOR.merge(KEY, stored, as_set(entry(identity)), NOW)
        VALIDATOR.expires_at(KEY, stored, NOW)
    assert len(checks) == len(set(checks)) == len(identities)
