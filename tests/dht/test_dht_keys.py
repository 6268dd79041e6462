"""Keys, XOR distance, bucket indices and CIDs."""

import random

import pytest

from hypermesh.dht.keys import (
    Cid,
    CidError,
    bucket_index,
    grind_key_in_bucket,
    kad_key,
    validate_multihash,
)


def test_cid_for_string_matches_ipfs():
    # `printf hello | ipfs add --cid-version 1 --raw-leaves -n` prints this CID.
    assert str(Cid.for_string("hello")) == "bafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq"


def test_cid_text_round_trip_and_multihash():
    cid = Cid.for_string("hypermesh")
    assert Cid.parse(str(cid)) == cid
    assert cid.multihash[:2] == b"\x12\x20" and len(cid.multihash) == 34
    assert Cid.from_bytes(cid.to_bytes()) == cid


def test_cidv0_parses_to_its_multihash():
    cid = Cid.parse("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG")
    assert cid.version == 0 and len(cid.multihash) == 34
    assert str(cid) == "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG"


@pytest.mark.parametrize("text", ["", "x123", "b!!!", "bafy", "zzzz", "Qm" + "1" * 44])
def test_bad_cids_are_rejected(text):
    with pytest.raises(CidError):
        Cid.parse(text)


@pytest.mark.parametrize("raw", [b"", b"\x12", b"\x12\x20abc", b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff", b"\x12\x41" + b"a" * 65])
def test_bad_multihashes_are_rejected(raw):
    with pytest.raises(CidError):
        validate_multihash(raw)


def test_bucket_index_is_the_highest_differing_bit():
    assert bucket_index(0, 1) == 0
    assert bucket_index(0, 1 << 255) == 255
    assert bucket_index(5, 5) == -1
    assert bucket_index(0b1000, 0b1011) == 1


def test_grind_key_lands_in_requested_bucket():
    rng = random.Random(3)
    local = kad_key(b"local")
    for index in (255, 250, 245):
        key = grind_key_in_bucket(local, index, rng)
        assert bucket_index(local, kad_key(key)) == index


def test_grind_gives_up_after_bounded_attempts():
    assert grind_key_in_bucket(kad_key(b"x"), 10, random.Random(1), max_attempts=50) is None
