"""Wire codec of ``/hm/capsule-run/1.0.0``: a peer asks a node to run ``CID FUNC INPUT``.

One exchange per stream. The client sends one varint-framed request
(``uvarint(len) ‖ body``, as :mod:`hypermesh.transport.framing` writes) and
finishes its side; the node answers with one framed response and closes::

    request  = 0x01 ‖ digest:32 ‖ function_length:u8 ‖ function ‖ input
        digest     the CID's sha2-256 (CIDv1, raw), as in /hm/capsule-chunks
        function   1..64 bytes, [a-z_][a-z0-9_]* (an entry point name)
        input      the rest of the body, ≤ MAX_INPUT_BYTES (16 MiB)
    response = 0x00 ‖ output_length:u32be ‖ output ‖ receipt    ran
             | code:u8 ‖ message                                  refused
        output     ≤ MAX_OUTPUT_BYTES (16 MiB)
        receipt    the signed execution receipt, canonical JSON, ≤ 4 KiB
        code       0x01 untrusted_signer   0x02 unknown_capsule   0x03 over_limit
                   0x04 busy               0x05 call_failed        0x06 quarantined
        message    UTF-8, ≤ 1 KiB, meant for a person

The codec only checks shape and bounds; what a receipt says is checked by
the client (:mod:`remote`) against what it asked for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from . import schema
from .cid import cid_from_digest, digest_from_cid
from .errors import CapsuleError, FormatError

PROTOCOL_ID = "/hm/capsule-run/1.0.0"

REQUEST_KIND_RUN = 0x01
DIGEST_BYTES = 32
MAX_FUNCTION_BYTES = 64
# Codec ceilings; a node's own input limit (RemoteRunLimits) is usually far lower.
MAX_INPUT_BYTES = 16 * 1024 * 1024
MAX_OUTPUT_BYTES = 16 * 1024 * 1024
MAX_RECEIPT_BYTES = 4096
MAX_MESSAGE_BYTES = 1024
MAX_REQUEST_BYTES = 1 + DIGEST_BYTES + 1 + MAX_FUNCTION_BYTES + MAX_INPUT_BYTES
MAX_RESPONSE_BYTES = 1 + 4 + MAX_OUTPUT_BYTES + MAX_RECEIPT_BYTES

STATUS_OK = 0x00
REFUSAL_CODES = {
    0x01: "untrusted_signer",
    0x02: "unknown_capsule",
    0x03: "over_limit",
    0x04: "busy",
    0x05: "call_failed",
    0x06: "quarantined",
}
REFUSAL_BYTES = {name: code for code, name in REFUSAL_CODES.items()}

_FUNCTION = re.compile(r"[a-z_][a-z0-9_]{0,63}")


class RunProtocolViolation(ValueError):
    """A peer sent a malformed request or response."""


class RemoteRunRefused(CapsuleError):
    """The node refused to run the call; ``code`` is one of :data:`REFUSAL_CODES`' names."""

    def __init__(self, code: str, message: str):
        super().__init__(f"the node refused ({code}): {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class RunRequest:
    cid: str
    function: str
    input: bytes

    def encode(self) -> bytes:
        function = self.function.encode("ascii")
        if not _FUNCTION.fullmatch(self.function):
            raise FormatError(f"not an entry point name: {self.function!r}")
        if len(self.input) > MAX_INPUT_BYTES:
            raise FormatError(f"input of {len(self.input)} bytes is over the {MAX_INPUT_BYTES}-byte limit")
        return bytes([REQUEST_KIND_RUN]) + digest_from_cid(self.cid) + bytes([len(function)]) + function + self.input


def decode_request(body: bytes) -> RunRequest:
    """Parse one request body; raises :class:`RunProtocolViolation` on anything but a valid request."""
    header = 1 + DIGEST_BYTES + 1
    if len(body) < header + 1 or len(body) > MAX_REQUEST_BYTES:
        raise RunProtocolViolation(f"a request is {header + 1} to {MAX_REQUEST_BYTES} bytes, got {len(body)}")
    if body[0] != REQUEST_KIND_RUN:
        raise RunProtocolViolation(f"unknown request kind 0x{body[0]:02x}")
    length = body[header - 1]
    function_bytes = bytes(body[header:header + length])
    if len(function_bytes) != length:
        raise RunProtocolViolation("the function name runs past the end of the request")
    function = function_bytes.decode("ascii", errors="replace")
    if not _FUNCTION.fullmatch(function):
        raise RunProtocolViolation(f"not an entry point name: {function_bytes[:MAX_FUNCTION_BYTES]!r}")
    data = bytes(body[header + length:])
    if len(data) > MAX_INPUT_BYTES:
        raise RunProtocolViolation(f"input of {len(data)} bytes is over {MAX_INPUT_BYTES}")
    return RunRequest(cid_from_digest(bytes(body[1:1 + DIGEST_BYTES])), function, data)


@dataclass(frozen=True, slots=True)
class RunOutcome:
    """A call the node ran: its output and the signed execution receipt (not yet checked)."""

    output: bytes
    receipt: dict


def encode_ran(output: bytes, receipt: dict) -> bytes:
    receipt_bytes = schema.canonical_json(receipt)
    if len(output) > MAX_OUTPUT_BYTES or len(receipt_bytes) > MAX_RECEIPT_BYTES:
        raise FormatError(f"output ({len(output)} bytes) or receipt ({len(receipt_bytes)} bytes) over the wire limits")
    return bytes([STATUS_OK]) + len(output).to_bytes(4, "big") + output + receipt_bytes


def encode_refusal(code: str, message: str) -> bytes:
    text = message.encode("utf-8")[:MAX_MESSAGE_BYTES].decode("utf-8", errors="ignore").encode("utf-8")
    return bytes([REFUSAL_BYTES[code]]) + text


def decode_response(body: bytes) -> RunOutcome:
    """The outcome of a run; raises :class:`RemoteRunRefused` for a refusal and
    :class:`RunProtocolViolation` for anything malformed."""
    if not body or len(body) > MAX_RESPONSE_BYTES:
        raise RunProtocolViolation(f"a response is 1 to {MAX_RESPONSE_BYTES} bytes, got {len(body)}")
    status = body[0]
    if status in REFUSAL_CODES:
        if len(body) - 1 > MAX_MESSAGE_BYTES:
            raise RunProtocolViolation(f"a refusal message is at most {MAX_MESSAGE_BYTES} bytes")
        try:
            message = bytes(body[1:]).decode("utf-8")
        except UnicodeDecodeError:
            raise RunProtocolViolation("a refusal message is not UTF-8") from None
        raise RemoteRunRefused(REFUSAL_CODES[status], message)
    if status != STATUS_OK:
        raise RunProtocolViolation(f"unknown response status 0x{status:02x}")
    if len(body) < 5:
        raise RunProtocolViolation("a run response lacks its output length")
    length = int.from_bytes(body[1:5], "big")
    if length > MAX_OUTPUT_BYTES or 5 + length > len(body):
        raise RunProtocolViolation(f"output length {length} runs past the response or over {MAX_OUTPUT_BYTES}")
    receipt_bytes = bytes(body[5 + length:])
    try:
        receipt = schema.decode_document(receipt_bytes, schema.EXECUTION_RECEIPT, "execution receipt", MAX_RECEIPT_BYTES)
    except FormatError as exc:
        raise RunProtocolViolation(str(exc)) from None
    return RunOutcome(bytes(body[5:5 + length]), receipt)
