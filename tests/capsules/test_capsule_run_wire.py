"""The /hm/capsule-run/1.0.0 codec and the serving side's reading of requests, fuzzed."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from hypermesh.capsules.cid import cid_from_digest
from hypermesh.capsules.errors import FormatError
from hypermesh.capsules.execution import CallResult
from hypermesh.capsules.remote import RemoteRunLimits, RemoteRunService
from hypermesh.capsules.run_wire import (
    MAX_MESSAGE_BYTES,
    REFUSAL_CODES,
    RemoteRunRefused,
    RunProtocolViolation,
    RunRequest,
    decode_request,
    decode_response,
    encode_ran,
    encode_refusal,
)
from hypermesh.transport.framing import frame
from hypermesh.transport.identity import Identity
from hypermesh.transport.varint import decode_uvarint

NODE = Identity.from_seed(b"run-wire-node")
functions = st.from_regex(r"[a-z_][a-z0-9_]{0,63}", fullmatch=True)
requests = st.builds(RunRequest, st.binary(min_size=32, max_size=32).map(cid_from_digest), functions,
                     st.binary(max_size=256))


@settings(max_examples=300)
@given(requests)
def test_requests_round_trip(request):
    assert decode_request(request.encode()) == request


@settings(max_examples=500)
@given(st.one_of(st.binary(max_size=120), requests.map(lambda r: r.encode()).flatmap(
    lambda body: st.integers(0, len(body) - 1).map(lambda i: body[:i] + bytes([body[i] ^ 0x80]) + body[i + 1:]))))
def test_request_decoder_refuses_anything_else_with_a_protocol_violation(body):
    try:
        request = decode_request(body)
    except RunProtocolViolation:
        return
    assert request.encode() == body


def test_request_encoder_refuses_what_the_decoder_would():
    cid = cid_from_digest(bytes(32))
    with pytest.raises(FormatError):
        RunRequest(cid, "Not-A-Function", b"").encode()
    with pytest.raises(FormatError):
        RunRequest(cid, "x" * 65, b"").encode()


@settings(max_examples=100)
@given(st.binary(max_size=512), functions)
def test_a_run_response_round_trips(output, function):
    receipt = CallResult(output, cid_from_digest(bytes(32)), function, b"in", 5, 7, NODE).receipt
    outcome = decode_response(encode_ran(output, receipt))
    assert outcome.output == output and outcome.receipt == receipt


@settings(max_examples=100)
@given(st.sampled_from(sorted(REFUSAL_CODES.values())), st.text(max_size=2000))
def test_refusals_round_trip_with_their_code_and_a_bounded_message(code, message):
    with pytest.raises(RemoteRunRefused) as refused:
        decode_response(encode_refusal(code, message))
    assert refused.value.code == code
    assert message.startswith(refused.value.message)
    assert len(refused.value.message.encode()) <= MAX_MESSAGE_BYTES


@settings(max_examples=500)
@given(st.binary(max_size=600))
def test_response_decoder_raises_only_its_own_errors(body):
    try:
        decode_response(body)
    except (RunProtocolViolation, RemoteRunRefused):
        pass


class ScriptedStream:
    """A stream that delivers ``incoming`` in small pieces, then end of data."""

    remote_peer = NODE.peer_id

    def __init__(self, incoming: bytes):
        self.incoming = incoming
        self.sent = bytearray()
        self.finished = False
        self.was_reset = False

    async def receive_some(self, max_bytes=None):
        await trio.lowlevel.checkpoint()
        piece, self.incoming = self.incoming[:7], self.incoming[7:]
        return piece

    async def send_all(self, data, *, eof=False):
        self.sent += data
        self.finished = self.finished or eof

    async def send_eof(self):
        self.finished = True

    async def aclose(self):
        pass

    async def reset(self):
        self.was_reset = True


class NothingInstalled:
    def known(self, cid):
        return None


def test_the_serving_side_survives_any_bytes():
    service = RemoteRunService(None, NothingInstalled(), None, RemoteRunLimits(max_input_bytes=64))

    @settings(max_examples=300)
    @given(st.one_of(requests.map(lambda r: frame(r.encode())), st.binary(max_size=200)))
    def serve(incoming):
        stream = ScriptedStream(incoming)
        trio.run(service.serve, stream)  # never raises
        assert stream.was_reset or stream.sent or incoming == b""
        if stream.sent:  # an answer, never a run: nothing is installed
            assert stream.finished
            length, prefix = decode_uvarint(bytes(stream.sent))
            assert len(stream.sent) == prefix + length
            with pytest.raises(RemoteRunRefused) as refused:
                decode_response(bytes(stream.sent[prefix:]))
            assert refused.value.code in ("unknown_capsule", "over_limit")

    serve()
