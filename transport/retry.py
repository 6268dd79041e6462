"""Address validation tokens for QUIC Retry (RFC 9000 §8.1.2), sans-IO.

When too many handshakes are half open, the server answers a new Initial
with a Retry carrying a token instead of creating state; only a client that
receives it at its claimed address can send it back. The token is
stateless: AES-GCM under a per-process key, bound to the client's address
and to the Retry's source connection ID, and valid for ``TOKEN_LIFETIME``
seconds.

Token = nonce (12) ‖ AES-GCM(issued_ms: u64 ‖ len ‖ address ‖ len ‖ retry CID
‖ original destination CID), no associated data, so that a token we issued
can be told from one we did not (RFC 9000 §8.1.3: an invalid Retry token
closes the connection; a token from elsewhere, e.g. another server's
NEW_TOKEN, is ignored).
"""

from __future__ import annotations

import ipaddress
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_LENGTH = 12
TAG_LENGTH = 16
# A client returns the token in its very next Initial, so a short life
# suffices; it also bounds how long a captured token can be replayed.
TOKEN_LIFETIME = 10.0
# QUIC connection IDs are at most 20 bytes.
MAX_CID_LENGTH = 20
_ISSUED = struct.Struct("!Q")


def _address_bytes(address: tuple) -> bytes:
    host, port = address[0], address[1]
    return ipaddress.ip_address(host.split("%")[0]).packed + port.to_bytes(2, "big")


@dataclass(frozen=True)
class TokenCheck:
    """What a token proved: ``ours`` (we issued it) and, if it is valid, the
    original destination CID to use for the connection."""

    ours: bool
    original_cid: bytes | None = None

    @property
    def valid(self) -> bool:
        return self.original_cid is not None


NOT_OURS = TokenCheck(ours=False)
INVALID = TokenCheck(ours=True)


class RetryTokens:
    def __init__(self, key: bytes | None = None) -> None:
        self._aead = AESGCM(key or AESGCM.generate_key(bit_length=128))

    def issue(self, address: tuple, original_cid: bytes, retry_cid: bytes, now: float) -> bytes:
        """A token for the client at ``address``, to come back to ``retry_cid``."""
        nonce = os.urandom(NONCE_LENGTH)
        address_bytes = _address_bytes(address)
        plaintext = b"".join((
            _ISSUED.pack(int(now * 1000)),
            bytes([len(address_bytes)]), address_bytes,
            bytes([len(retry_cid)]), retry_cid,
            original_cid,
        ))
        return nonce + self._aead.encrypt(nonce, plaintext, None)

    def check(self, token: bytes, address: tuple, destination_cid: bytes, now: float) -> TokenCheck:
        """Whether ``token`` is ours, and valid from ``address`` to ``destination_cid`` now."""
        if len(token) < NONCE_LENGTH + TAG_LENGTH + _ISSUED.size + 2:
            return NOT_OURS
        try:
            plaintext = self._aead.decrypt(token[:NONCE_LENGTH], token[NONCE_LENGTH:], None)
        except InvalidTag:
            return NOT_OURS
        # We wrote it, so it parses; the checks below are what it proves.
        (issued_ms,) = _ISSUED.unpack_from(plaintext)
        position = _ISSUED.size
        address_bytes = plaintext[position + 1 : position + 1 + plaintext[position]]
        position += 1 + len(address_bytes)
        retry_cid = plaintext[position + 1 : position + 1 + plaintext[position]]
        original_cid = plaintext[position + 1 + len(retry_cid) :]
        if (
            address_bytes != _address_bytes(address)
            or retry_cid != destination_cid
            or not 0 <= now - issued_ms / 1000 <= TOKEN_LIFETIME
            or len(original_cid) > MAX_CID_LENGTH
        ):
            return INVALID
        return TokenCheck(ours=True, original_cid=original_cid)
