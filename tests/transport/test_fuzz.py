"""Every transport decoder fed arbitrary bytes: only our own errors come out."""

import trio
from hypothesis import given
from hypothesis import strategies as st

from hypermesh.transport.endpoint import destination_cid
from hypermesh.transport.errors import ProtocolError
from hypermesh.transport.framing import BufferedReader, FramingError
from hypermesh.transport.identify import decode_record
from hypermesh.transport.identity import Identity
from hypermesh.transport.multiaddrs import MultiaddrError, parse_multiaddr

PEER = Identity.from_seed(b"fuzz").peer_id


@given(st.binary(max_size=2048))
def test_identify_record_decoder(data):
    try:
        record = decode_record(data, PEER)
    except ProtocolError:
        return
    assert record.peer_id == PEER


@given(st.binary(max_size=128))
def test_multiaddr_decoder(data):
    try:
        parse_multiaddr(data)
    except MultiaddrError:
        pass


@given(st.binary(max_size=64))
def test_destination_cid_parser(data):
    parsed = destination_cid(data)
    if parsed is not None:
        cid, _ = parsed
        assert len(cid) <= 20


class ChunkedStream:
    def __init__(self, chunks):
        self._chunks = list(chunks)

    async def receive_some(self, max_bytes=None):
        await trio.lowlevel.checkpoint()
        return self._chunks.pop(0) if self._chunks else b""

    async def send_all(self, data):
        raise AssertionError("not used")


@given(st.lists(st.binary(max_size=40), max_size=8))
def test_frame_reader_bounds_and_validates(chunks):
    async def read_all():
        reader = BufferedReader(ChunkedStream(chunks))
        for _ in range(20):
            try:
                frame = await reader.read_frame(max_size=16)
            except FramingError:
                return
            if frame is None:
                return
            assert len(frame) <= 16

    trio.run(read_all)
