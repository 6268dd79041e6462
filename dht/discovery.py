"""Discovery for the rest of the node: providers, values and named services.

    async with open_discovery(host, data_dir, bootstrap=[...]) as discovery:
        await discovery.register_service("relay", "/hm/relay/1", weight=10)
        instances = await discovery.resolve_service("relay")
        discovery.provide(Cid.for_string("some content"))
        providers = await discovery.find_providers(Cid.for_string("some content"))

Service resolution is cached: a repeat resolution is a dict lookup (well
under a millisecond) until the cache entry's TTL passes (10 s; 2 s for an
answer that found no instance), an entry in it expires, this node
re-registers the service, or a PUT_VALUE changes the set we serve for it.
Most nodes hold no copy of a given name's set and see no such PUT_VALUE, so
the short TTL is what bounds how stale their answers get.

Our own registrations are re-signed with a new sequence number and
re-published at half their lifetime; registrations that fall due together
(or are registered together with :meth:`Discovery.register_services`) are
published with one DHT lookup per keyspace region rather than one per
service.
"""

from __future__ import annotations

import logging
import random
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from .driver import KademliaService, multiaddr_bytes, parse_peer_addr
from .kademlia import KadConfig, Mode
from .keys import Cid
from .messages import PeerInfo
from .records import (
    DEFAULT_SERVICE_TTL,
    SERVICE_NAMESPACE,
    ServiceRecord,
    decode_service_set,
    encode_service_set,
    rank_service_instances,
    service_key,
    service_name_from_key,
    sign_service_record,
)
from .store import SqliteRecordStore

log = logging.getLogger(__name__)

# A resolution is reused this long at most, even if no change is seen: a
# node that holds no copy of the set learns of new or re-registered
# instances only by asking again.
DEFAULT_CACHE_TTL = 10.0
# An answer with no instance is reused only briefly: the service may be
# registering right now (a client started together with its server).
DEFAULT_NEGATIVE_CACHE_TTL = 2.0
# A publication that no peer stored (or that failed outright) is tried again this much later.
RENEWAL_RETRY_DELAY = 60.0


@dataclass(slots=True)
class _CachedResolution:
    records: list[ServiceRecord]
    valid_until: float


@dataclass(frozen=True, slots=True)
class ServiceOffer:
    """One service to register with :meth:`Discovery.register_services`."""

    name: str
    protocol: str
    addrs: list[str | bytes] | None = None  # None: our listen addresses
    weight: int = 100
    ttl: float = DEFAULT_SERVICE_TTL


@dataclass(slots=True)
class _Registration:
    name: str
    protocol: str
    addrs: list[bytes] | None  # None: our listen addresses at publish time
    weight: int
    ttl: float
    renew_at: float = 0.0


def _as_cid(cid: Cid | str) -> Cid:
    return cid if isinstance(cid, Cid) else Cid.parse(cid)


class Discovery:
    def __init__(
        self,
        service: KademliaService,
        identity,
        *,
        cache_ttl: float = DEFAULT_CACHE_TTL,
        negative_cache_ttl: float = DEFAULT_NEGATIVE_CACHE_TTL,
        rng: random.Random | None = None,
    ):
        self.service = service
        self._rng = rng or random.Random()
        self.identity = identity
        self.cache_ttl = cache_ttl
        self.negative_cache_ttl = negative_cache_ttl
        self._cache: dict[str, _CachedResolution] = {}
        self._registrations: dict[str, _Registration] = {}
        self._renewal_wakeup = trio.Event()
        service.on_record_changed(self._record_changed)

    # ------------------------------------------------------------ providers

    def provide(self, cid: Cid | str) -> None:
        """Announce this node as a provider of ``cid``, republished until the node stops."""
        self.service.provide([_as_cid(cid).multihash])

    async def wait_provided(self, cid: Cid | str) -> None:
        """Wait until ``cid``'s provider records have been published once."""
        await self.service.wait_provided([_as_cid(cid).multihash])

    def stop_providing(self, cid: Cid | str) -> None:
        self.service.core.stop_providing(_as_cid(cid).multihash)

    async def find_providers(self, cid: Cid | str, wanted: int = 20) -> list[PeerInfo]:
        result = await self.service.get_providers(_as_cid(cid).multihash, wanted)
        return result.providers

    # --------------------------------------------------------------- values

    async def put(self, key: bytes, value: bytes) -> int:
        """Store a value record; returns how many peers accepted it."""
        return (await self.service.put_value(key, value)).stored

    async def get(self, key: bytes) -> bytes | None:
        return (await self.service.get_value(key)).value

    # ------------------------------------------------------------- services

    async def register_service(
        self,
        name: str,
        protocol: str,
        addrs: list[str | bytes] | None = None,
        *,
        weight: int = 100,
        ttl: float = DEFAULT_SERVICE_TTL,
    ) -> int:
        """Publish (and keep publishing) a signed record that we offer ``name``.

        Returns how many peers stored the first publication.
        """
        stored = await self.register_services([ServiceOffer(name, protocol, addrs, weight, ttl)])
        return stored[name]

    async def register_services(self, offers: list[ServiceOffer]) -> dict[str, int]:
        """Register many services at once: one DHT lookup per keyspace region.

        Returns how many peers stored each service's first publication. If
        any offer is invalid, none is registered.
        """
        registrations = {
            offer.name: _Registration(
                offer.name,
                offer.protocol,
                None if offer.addrs is None else [a for a in (multiaddr_bytes(x) for x in offer.addrs) if a],
                offer.weight,
                offer.ttl,
            )
            for offer in offers
        }
        stored = await self._publish(list(registrations.values()))  # raises on invalid arguments: none kept
        self._registrations.update(registrations)
        self._renewal_wakeup.set()
        return stored

    def unregister_service(self, name: str) -> None:
        """Stop renewing; the record disappears from the network when it expires."""
        self._registrations.pop(name, None)

    async def _publish(self, registrations: list[_Registration]) -> dict[str, int]:
        """Sign and store fresh records; returns how many peers stored each."""
        now = self.service.now()
        values = {}
        for registration in registrations:
            addrs = registration.addrs if registration.addrs is not None else list(self.service.core.local_addrs)
            signed = sign_service_record(
                self.identity,
                registration.name,
                registration.protocol,
                addrs,
                weight=registration.weight,
                seq=self.service.store.next_sequence(f"service:{registration.name}", now),
                now=now,
                ttl=registration.ttl,
            )
            values[service_key(registration.name)] = encode_service_set([signed])
        for registration in registrations:
            registration.renew_at = now + registration.ttl / 2
            self._cache.pop(registration.name, None)
        if len(values) == 1:
            # One key: a lookup straight at it is cheaper than a region lookup.
            [(key, value)] = values.items()
            stored = {key: (await self.service.put_value(key, value)).stored}
        else:
            stored = (await self.service.put_values(values)).stored_per_key
        outcome = {r.name: stored.get(service_key(r.name), 0) for r in registrations}
        for registration in registrations:
            if not outcome[registration.name]:
                # No peer took it (none known yet, or all failed): only this
                # node holds the record, so try again soon, not at half its TTL.
                registration.renew_at = min(registration.renew_at, now + RENEWAL_RETRY_DELAY)
        return outcome

    async def resolve_service(self, name: str) -> list[ServiceRecord]:
        """Live instances of ``name`` in the order to try them (see rank_service_instances)."""
        now = self.service.now()
        cached = self._cache.get(name)
        if cached is not None and now < cached.valid_until:
            return [r for r in cached.records if r.expires_at > now]
        result = await self.service.get_value(service_key(name))
        now = self.service.now()
        records = decode_service_set(service_key(name), result.value, now) if result.value else []
        records = rank_service_instances(records, self._rng)
        ttl = self.cache_ttl if records else self.negative_cache_ttl
        valid_until = min([now + ttl] + [float(r.expires_at) for r in records])
        self._cache[name] = _CachedResolution(records, valid_until)
        return records

    def invalidate(self, name: str) -> None:
        self._cache.pop(name, None)

    def _record_changed(self, key: bytes) -> None:
        if key.startswith(SERVICE_NAMESPACE):
            try:
                self.invalidate(service_name_from_key(key))
            except ValueError:
                pass

    async def run(self) -> None:
        """Renew our service registrations before they expire."""
        while True:
            due = min((r.renew_at for r in self._registrations.values()), default=None)
            with trio.move_on_at(float("inf") if due is None else due - self.service.now() + trio.current_time()):
                await self._renewal_wakeup.wait()
            self._renewal_wakeup = trio.Event()
            now = self.service.now()
            due = [r for r in self._registrations.values() if r.renew_at <= now]
            if not due:
                continue
            try:
                await self._publish(due)
            except Exception as exc:  # a failed renewal is retried at the next wake-up
                log.warning("renewing %d service registrations failed: %s", len(due), exc)
                for registration in due:
                    registration.renew_at = now + RENEWAL_RETRY_DELAY


@asynccontextmanager
async def open_discovery(
    host,
    data_dir: Path | str,
    *,
    bootstrap: list[str] = (),
    mode: Mode = Mode.SERVER,
    config: KadConfig = KadConfig(),
    rng: random.Random | None = None,
):
    """Run the DHT on ``host`` with its records under ``data_dir``; yields a :class:`Discovery`."""
    store = SqliteRecordStore(data_dir)
    service = KademliaService(
        host, store, mode=mode, config=config, bootstrap=[parse_peer_addr(a) for a in bootstrap], rng=rng
    )
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(service.run)
            discovery = Discovery(service, host.identity)
            nursery.start_soon(discovery.run)
            yield discovery
            nursery.cancel_scope.cancel()
    finally:
        store.close()
