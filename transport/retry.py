"""Address validation tokens for QUIC Retry (RFC 9000 §8.1.2), sans-IO.

When too many handshakes are half open, the server answers a new Initial
with a Retry carrying a token instead of creating state; only a client that
receives it at its claimed address can send it back. The token is
stateless: AES-GCM under a per-process key, bound to the client's address
(as associated data) and to the Retry's source connection ID, and valid for
``TOKEN_LIFETIME`` seconds.

Token = nonce (12) ‖ AES-GCM(issued_ms: u64 ‖ original destination CID).
"""

from __future__ import annotations

import ipaddress
import os
import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_LENGTH = 12
# A client returns the token in its very next Initial, so a short life
# suffices; it also bounds how long a captured token can be replayed.
TOKEN_LIFETIME = 10.0
# QUIC connection IDs are at most 20 bytes.
MAX_CID_LENGTH = 20
_ISSUED = struct.Struct("!Q")


def _address_bytes(address: tuple) -> bytes:
    host, port = address[0], address[1]
    return ipaddress.ip_address(host.split("%")[0]).packed + port.to_bytes(2, "big")


class RetryTokens:
    def __init__(self, key: bytes | None = None) -> None:
        self._aead = AESGCM(key or AESGCM.generate_key(bit_length=128))

    def issue(self, address: tuple, original_cid: bytes, retry_cid: bytes, now: float) -> bytes:
        """A token for the client at ``address``, to come back to ``retry_cid``."""
        nonce = os.urandom(NONCE_LENGTH)
        plaintext = _ISSUED.pack(int(now * 1000)) + original_cid
        return nonce + self._aead.encrypt(nonce, plaintext, _address_bytes(address) + retry_cid)

    def validate(self, token: bytes, address: tuple, destination_cid: bytes, now: float) -> bytes | None:
        """The original destination CID if ``token`` is ours, fresh, and for this address and CID."""
        if len(token) < NONCE_LENGTH + 16 + _ISSUED.size:
            return None
        try:
            plaintext = self._aead.decrypt(
                token[:NONCE_LENGTH], token[NONCE_LENGTH:], _address_bytes(address) + destination_cid
            )
        except InvalidTag:
            return None
        (issued_ms,) = _ISSUED.unpack_from(plaintext)
        original_cid = plaintext[_ISSUED.size :]
        if not 0 <= now - issued_ms / 1000 <= TOKEN_LIFETIME or len(original_cid) > MAX_CID_LENGTH:
            return None
        return original_cid
