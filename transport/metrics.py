"""Prometheus metrics of the transport (served by ``hypermesh run --metrics``)."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector


class PlainCounter(Collector):
    """A counter for the per-packet paths: ``inc`` adds to a plain integer
    and the registry reads it when scraped. prometheus_client's Counter
    takes a lock on every increment, a measurable share of a ping round
    trip when every datagram and every stream read and write is counted."""

    def __init__(self, name: str, documentation: str):
        self.name = name
        self.documentation = documentation
        self.value = 0
        REGISTRY.register(self)

    def inc(self, amount: int = 1) -> None:
        self.value += amount

    def collect(self):
        yield CounterMetricFamily(self.name, self.documentation, value=self.value)


CONNECTIONS_OPEN = Gauge("hypermesh_connections_open", "Open QUIC connections", ["direction"])
CONNECTIONS_TOTAL = Counter(
    "hypermesh_connections_total", "Connections opened, by direction and outcome", ["direction", "outcome"]
)
HANDSHAKE_SECONDS = Histogram(
    "hypermesh_handshake_seconds",
    "QUIC + libp2p TLS handshake latency",
    ["direction", "resumed"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STREAMS_OPEN = Gauge("hypermesh_streams_open", "Open streams")
STREAMS_TOTAL = Counter("hypermesh_streams_total", "Streams opened, by direction and protocol", ["direction", "protocol"])
STREAMS_REFUSED = Counter("hypermesh_streams_refused_total", "Inbound streams refused", ["reason"])
PEER_VIOLATIONS = Counter(
    "hypermesh_peer_violations_total",
    "Protocol violations by authenticated peers: QUIC errors they caused, malformed negotiation or identify",
    ["layer"],
)
BYTES_SENT = PlainCounter("hypermesh_stream_bytes_sent_total", "Application bytes written to streams")
BYTES_RECEIVED = PlainCounter("hypermesh_stream_bytes_received_total", "Application bytes read from streams")
CONNECTIONS_TRIMMED = Counter(
    "hypermesh_connections_trimmed_total", "Idle connections closed because the host held more than its high water mark"
)
DATAGRAMS_RECEIVED = PlainCounter("hypermesh_datagrams_received_total", "UDP datagrams received")
DATAGRAMS_DROPPED = Counter("hypermesh_datagrams_dropped_total", "UDP datagrams dropped, by reason", ["reason"])
DATAGRAM_SIZE = Gauge("hypermesh_max_datagram_size_bytes", "Datagram size adopted after the last path probe")
