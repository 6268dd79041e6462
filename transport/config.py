"""Limits and timeouts of a :class:`~hypermesh.transport.host.Host`."""

from __future__ import annotations

from dataclasses import dataclass

from .connmgr import ConnectionManagerConfig
from .endpoint import SPIN_SECONDS

AGENT_VERSION = "hypermesh/0.1.0"


@dataclass
class HostConfig:
    max_connections: int = 4096
    max_connections_per_peer: int = 2
    max_streams_per_connection: int = 256
    max_inbound_handlers: int = 8192
    idle_timeout: float = 30.0  # QUIC idle timeout: silence this long ends a connection
    idle_connection_timeout: float = 300.0  # a connection with no stream for this long is closed
    handshake_timeout: float = 10.0  # per inbound handshake, and per dialled address
    # A whole outbound dial (every address of the peer, raced) gives up after
    # this: a loopback or internet handshake takes milliseconds to a second,
    # and a caller should learn soon that a peer is unreachable.
    dial_timeout: float = 5.0
    negotiation_timeout: float = 10.0
    # Half-open inbound handshakes beyond which a new Initial must first
    # prove its address with a QUIC Retry; None: min(64, max_connections // 4).
    # 0 asks every client for a Retry.
    retry_threshold: int | None = None
    agent_version: str = AGENT_VERSION
    probe_datagram_size: bool = True
    enable_resumption: bool = True
    # Send replay-safe requests (Host.new_stream's replay_safe, by default the
    # protocols registered with early_data=True and replay_safe=True)
    # in 0-RTT on resumed dials; the server side always applies the rule.
    enable_early_data: bool = True
    # Poll the socket this long after traffic instead of sleeping (lower
    # latency, more CPU). 0 where many hosts share a process or the machine
    # has no core to spare: spinning endpoints then starve the ones with work.
    busy_poll_seconds: float = SPIN_SECONDS
    # When to close idle connections (high/low water marks, grace period).
    connection_manager: ConnectionManagerConfig = ConnectionManagerConfig()
