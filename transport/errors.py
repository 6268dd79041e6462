"""Errors the transport raises. Every one carries a message fit for a user."""

from __future__ import annotations


class TransportError(Exception):
    """Base class: a dial, handshake, stream or protocol failure."""


class HandshakeError(TransportError):
    """The QUIC/TLS handshake failed or timed out."""


class PeerIdMismatch(HandshakeError):
    """The remote proved a different peer ID than the one we dialled."""


class PeerRefused(HandshakeError):
    """The remote refused the connection (QUIC CONNECTION_REFUSED), e.g. at its connection limit."""


class CertificateError(HandshakeError):
    """The remote's libp2p TLS certificate is invalid."""


class ProtocolError(TransportError):
    """The remote violated a protocol (multistream-select, framing, …)."""


class NegotiationError(ProtocolError):
    """No protocol could be agreed on a stream."""


class StreamReset(TransportError):
    """The stream was reset by either side."""


class WriteStalled(StreamReset):
    """A handler's write made no progress for too long; the stream was reset."""


class ConnectionClosed(TransportError):
    """The connection is closed; no further streams or data."""


class ResourceLimitError(TransportError):
    """A configured limit (connections, streams, buffers) refused the request."""


def fresh(error: TransportError) -> TransportError:
    """A new exception like ``error``, a stored one (a stream's reset, a
    connection's handshake failure), to raise in its place.

    Raised itself, the stored exception gets a traceback whose frames hold
    what stores it: a reference cycle that only the garbage collector frees,
    and a traceback that grows with every raise.
    """
    return type(error)(*error.args)
