"""One DHT node's Prometheus metrics, in a registry of its own.

Several nodes often share a process (the bench's workers run dozens, the
simulator thousands); with process-wide gauges the last node to write one
would set it for all. Each core therefore gets its own
:class:`DhtMetrics`, and whoever serves metrics (``hypermesh run
--metrics``) exposes that node's registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class DhtMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.routing_table_peers = Gauge(
            "hypermesh_dht_routing_table_peers", "Peers in the DHT routing table", registry=registry
        )
        self.requests_handled = Counter(
            "hypermesh_dht_requests_total", "Inbound DHT requests", ["type"], registry=registry
        )
        self.requests_rejected = Counter(
            "hypermesh_dht_requests_rejected_total", "Inbound DHT requests refused", ["type", "reason"],
            registry=registry,
        )
        self.early_requests = Counter(
            "hypermesh_dht_early_data_requests_total",
            "Inbound DHT requests on streams opened in 0-RTT, before the handshake completed: "
            "answered (a read, at once), held (a write, waiting for the handshake), "
            "applied (a held write passed on, once the handshake completed, to the usual checks and rate limits), "
            "dropped (a held write whose handshake failed)",
            ["type", "outcome"],
            registry=registry,
        )
        self.lookup_stragglers = Counter(
            "hypermesh_dht_lookup_stragglers_total",
            "Lookup queries unanswered past the straggler threshold, which their lookup stopped waiting on",
            registry=registry,
        )
        self.reprovided_records = Counter(
            "hypermesh_dht_reprovide_records_total", "Provider records republished (keys, not messages)",
            registry=registry,
        )
        self.reprovide_lookups = Counter(
            "hypermesh_dht_reprovide_lookups_total",
            "Lookups run by the reprovider, by level: region, sub_region (keys a region could not place), "
            "single_key (keys neither could)",
            ["level"],
            registry=registry,
        )
        self.overdue_keys = Gauge(
            "hypermesh_dht_reprovide_overdue_keys",
            "Provided keys nobody can find us for: last published longer ago than a record lives, "
            "or never confirmed published",
            registry=registry,
        )
        self.reprovide_lag = Gauge(
            "hypermesh_dht_reprovide_lag_seconds",
            "How far the oldest pending republish is past its due time",
            registry=registry,
        )
        self.unconfirmed_keys = Gauge(
            "hypermesh_dht_provide_unconfirmed_keys",
            "Provided keys whose last publication was not confirmed by the peers it was sent to",
            registry=registry,
        )
        self.unconfirmed_records = Counter(
            "hypermesh_dht_provide_unconfirmed_total",
            "Provider records sent but not confirmed (keys, not messages)",
            registry=registry,
        )

        self.confirm_probes = Counter(
            "hypermesh_dht_provide_confirm_probes_total",
            "GET_PROVIDERS probes confirming a publication, by outcome: confirmed (the peer lists us), "
            "missing (it answered without us), unanswered (no answer, or a full list that may leave us out)",
            ["outcome"],
            registry=registry,
        )

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """The current value of one sample (``name`` as exposed), for tests and benches."""
        return self.registry.get_sample_value(name, labels or {})
