"""Value records and their validators: ``/pk/<peer id>`` and ``/hm/service/<name>``.

A DHT server stores a value only if the namespace's validator accepts it,
and a client believes a value only after validating it itself: the peers we
ask are not trusted. Unknown namespaces are refused (as go-libp2p-kad-dht
does), so the DHT cannot be used as free anonymous storage.

``/hm/service/<name>`` holds a set of signed entries, one per peer offering
the service. Each entry names the peer, its addresses, the protocol, a
weight, a sequence number, when it was issued and when it expires, signed by
the peer's host key. Servers merge sets entry by entry, so many instances of
one service live under one key, and a stale or replayed entry (lower
sequence number) never replaces a newer one.
"""

from __future__ import annotations

import functools
import itertools
import random
from dataclasses import dataclass, field
from typing import Protocol

from google.protobuf.message import DecodeError

from hypermesh.transport.identity import Identity, IdentityError, PeerId, verify_signature

from . import kad_pb2
from .messages import usable_multiaddrs
from .routing import ip_group

PK_NAMESPACE = b"/pk/"
SERVICE_NAMESPACE = b"/hm/service/"
# Domain separation: a service-record signature can never be replayed as a
# signature over anything else the host key signs (TLS handshakes, envelopes).
SERVICE_SIGNATURE_DOMAIN = b"hypermesh-service-record:"

# Clocks on the internet disagree by seconds, not minutes; a record issued
# further ahead than this is from the future and refused.
MAX_CLOCK_SKEW = 300.0
# An entry must be re-signed at least this often, which bounds how long a
# revoked instance (or a flood of sybil entries) can linger.
MAX_SERVICE_TTL = 24 * 3600.0
DEFAULT_SERVICE_TTL = 3600.0
# Value records other than service entries (public keys) are dropped after this
# long without a re-put, like go-libp2p-kad-dht's MaxRecordAge.
MAX_RECORD_AGE = 36 * 3600.0
MAX_SERVICE_NAME_LENGTH = 128
MAX_SERVICE_PROTOCOL_LENGTH = 256
MAX_SERVICE_ADDRS = 16
MAX_SERVICE_WEIGHT = 65535
# Entries kept per service name; when full, only peers already listed can update.
MAX_SERVICE_INSTANCES = 64
# Instances of one name a server admits from one IP prefix (/24, /48): keys
# are free, prefixes are not (see ServiceRecordValidator).
MAX_SERVICE_INSTANCES_PER_PREFIX = 4


class RecordError(ValueError):
    """A record is invalid, expired, from the future, or older than the one we have."""


class NoUsableAddressError(RecordError):
    """A service entry lists addresses, but none we can parse (all newer or mangled formats)."""


@dataclass(frozen=True, slots=True)
class PutOrigin:
    """Who sent a PUT_VALUE: the peer, and the IP prefix we observed it on
    (None for LAN and loopback addresses, which are exempt from prefix caps).

    ``admitted`` is the receiving server's memory for the key: the prefix each
    listed instance was admitted from (see ServiceRecordValidator), which a
    merge keeps up to date.
    """

    peer: PeerId
    group: str | None
    admitted: dict[PeerId, str | None] = field(default_factory=dict, compare=False)


def service_key(name: str) -> bytes:
    _check_service_name(name)
    return SERVICE_NAMESPACE + name.encode("utf-8")


def pk_key(peer_id: PeerId) -> bytes:
    return PK_NAMESPACE + peer_id.multihash


def _check_service_name(name: str) -> None:
    if not name or len(name.encode("utf-8")) > MAX_SERVICE_NAME_LENGTH or "/" in name:
        raise RecordError(f"invalid service name {name!r}")


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    """One verified instance of a service."""

    name: str
    peer_id: PeerId
    addrs: tuple[bytes, ...]
    protocol: str
    weight: int
    seq: int
    issued_at: int
    expires_at: int
    signed: bytes  # the SignedServiceRecord, to pass on unchanged


def sign_service_record(
    identity: Identity,
    name: str,
    protocol: str,
    addrs: list[bytes],
    *,
    weight: int,
    seq: int,
    now: float,
    ttl: float = DEFAULT_SERVICE_TTL,
) -> bytes:
    """A SignedServiceRecord for this host, valid from ``now`` for ``ttl`` seconds."""
    _check_service_name(name)
    if not protocol or len(protocol) > MAX_SERVICE_PROTOCOL_LENGTH:
        raise RecordError("service protocol must be 1 to 256 characters")
    if not 0 <= weight <= MAX_SERVICE_WEIGHT or len(addrs) > MAX_SERVICE_ADDRS:
        raise RecordError(f"service weight must be 0..{MAX_SERVICE_WEIGHT}, with at most {MAX_SERVICE_ADDRS} addresses")
    if not 0 < ttl <= MAX_SERVICE_TTL:
        raise RecordError(f"service record TTL must be in (0, {MAX_SERVICE_TTL}]")
    body = kad_pb2.ServiceRecordBody(
        name=name,
        peer_id=identity.peer_id.multihash,
        addrs=list(addrs),
        protocol=protocol,
        weight=weight,
        seq=seq,
        issued_at=int(now),
        expires_at=int(now + ttl),
    ).SerializeToString()
    signed = kad_pb2.SignedServiceRecord(
        body=body,
        public_key=identity.public_key_proto,
        signature=identity.sign(SERVICE_SIGNATURE_DOMAIN + body),
    )
    return signed.SerializeToString()


def _parse(message_class, data: bytes):
    message = message_class()
    try:
        message.ParseFromString(data)
    except (DecodeError, RecursionError, ValueError) as exc:
        raise RecordError(f"malformed {message_class.__name__}: {exc}") from None
    return message


# A PUT to a name with many instances merges the stored set and computes its
# expiry, so without this every stored entry's signature would be checked
# again on every PUT (three times per entry). Verifying is deterministic, so
# results are remembered (as consensus/wire.py does for votes); bounded, and
# an entry is at most ~1 KB.
@functools.lru_cache(maxsize=4096)
def _entry_signature_verifies(public_key: bytes, body: bytes, signature: bytes) -> bool:
    return verify_signature(public_key, SERVICE_SIGNATURE_DOMAIN + body, signature)


def forget_verified_signatures() -> None:
    """Empty the cache of checked entry signatures (tests count checks from zero)."""
    _entry_signature_verifies.cache_clear()


def verify_service_entry(signed_bytes: bytes, name: str, now: float) -> ServiceRecord:
    """Check one signed entry completely; raises :class:`RecordError`.

    The signature is checked once per distinct entry (see ``_entry_signature_verifies``);
    the checks that depend on ``now`` or ``name`` run every time.
    """
    signed = _parse(kad_pb2.SignedServiceRecord, signed_bytes)
    if not signed.signature:
        raise RecordError("service record is unsigned")
    try:
        peer_id = PeerId.from_public_key(signed.public_key)
        if not _entry_signature_verifies(signed.public_key, signed.body, signed.signature):
            raise RecordError("service record signature does not verify")
    except IdentityError as exc:
        raise RecordError(f"service record key: {exc}") from None
    body = _parse(kad_pb2.ServiceRecordBody, signed.body)
    if body.peer_id != peer_id.multihash:
        raise RecordError("service record is signed by another peer than it names")
    if body.name != name:
        raise RecordError(f"service record for {body.name!r} stored under {name!r}")
    if body.expires_at <= now:
        raise RecordError("service record has expired")
    if body.issued_at > now + MAX_CLOCK_SKEW:
        raise RecordError("service record is issued in the future")
    if body.expires_at - body.issued_at > MAX_SERVICE_TTL or body.expires_at < body.issued_at:
        raise RecordError("service record lifetime is out of bounds")
    if len(body.protocol) > MAX_SERVICE_PROTOCOL_LENGTH or not body.protocol:
        raise RecordError("service record protocol is empty or too long")
    if body.weight > MAX_SERVICE_WEIGHT:
        raise RecordError("service record weight is out of range")
    if len(body.addrs) > MAX_SERVICE_ADDRS:
        raise RecordError("service record lists too many addresses")
    # Addresses are judged one by one, as in FIND_NODE answers; ``signed``
    # still carries them all, for peers whose multiaddr table knows more.
    addrs = usable_multiaddrs(body.addrs)
    if body.addrs and not addrs:
        raise NoUsableAddressError("service record has no address we can parse")
    return ServiceRecord(
        name=name,
        peer_id=peer_id,
        addrs=addrs,
        protocol=body.protocol,
        weight=body.weight,
        seq=body.seq,
        issued_at=body.issued_at,
        expires_at=body.expires_at,
        signed=signed_bytes,
    )


def service_name_from_key(key: bytes) -> str:
    try:
        name = key[len(SERVICE_NAMESPACE) :].decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError("service name is not UTF-8") from None
    _check_service_name(name)
    return name


def decode_service_set(key: bytes, value: bytes, now: float) -> list[ServiceRecord]:
    """All valid, unexpired entries of a stored set; invalid ones are dropped."""
    name = service_name_from_key(key)
    entries = _parse(kad_pb2.ServiceRecordSet, value).entries
    records: dict[PeerId, ServiceRecord] = {}
    for entry in entries[:MAX_SERVICE_INSTANCES * 2]:
        try:
            record = verify_service_entry(entry.SerializeToString(), name, now)
        except RecordError:
            continue
        current = records.get(record.peer_id)
        if current is None or record.seq > current.seq:
            records[record.peer_id] = record
    return list(records.values())


def _entry_versions(value: bytes) -> dict[bytes, int]:
    """Peer ID → sequence number of each entry of a set already validated
    (no signature checks: comparing versions must stay cheap)."""
    versions: dict[bytes, int] = {}
    for entry in _parse(kad_pb2.ServiceRecordSet, value).entries:
        body = _parse(kad_pb2.ServiceRecordBody, entry.body)
        versions[body.peer_id] = max(body.seq, versions.get(body.peer_id, -1))
    return versions


def encode_service_set(signed_entries: list[bytes]) -> bytes:
    """A ServiceRecordSet value from serialized SignedServiceRecords."""
    entries = [_parse(kad_pb2.SignedServiceRecord, signed) for signed in signed_entries]
    return kad_pb2.ServiceRecordSet(entries=entries).SerializeToString()


class Validator(Protocol):
    def validate(self, key: bytes, value: bytes, now: float) -> None:
        """Raise RecordError unless ``value`` may be stored under ``key``."""

    def merge(
        self, key: bytes, existing: bytes | None, incoming: bytes, now: float, origin: PutOrigin | None = None
    ) -> bytes:
        """The value to keep when ``incoming`` arrives; RecordError if it is older.

        ``origin`` is the sender of a PUT_VALUE from the network (None: our
        own record, or answers merged by a lookup).
        """

    def expires_at(self, key: bytes, value: bytes, now: float) -> float:
        """When a stored value stops being served."""

    def is_current(self, key: bytes, value: bytes, best: bytes) -> bool:
        """Whether ``value`` (validated) holds all that ``best`` does: a peer serving it needs no update."""


class PublicKeyValidator:
    """``/pk/<peer id multihash>`` → the libp2p public key that hashes to it."""

    def validate(self, key: bytes, value: bytes, now: float) -> None:
        try:
            peer_id = PeerId.from_bytes(key[len(PK_NAMESPACE) :])
            matches = peer_id.matches_public_key(value)
        except IdentityError as exc:
            raise RecordError(f"public key record: {exc}") from None
        if not matches:
            raise RecordError("public key does not match the peer ID in the key")

    def merge(self, key: bytes, existing: bytes | None, incoming: bytes, now: float, origin: PutOrigin | None = None) -> bytes:
        self.validate(key, incoming, now)
        return incoming

    def expires_at(self, key: bytes, value: bytes, now: float) -> float:
        return now + MAX_RECORD_AGE

    def is_current(self, key: bytes, value: bytes, best: bytes) -> bool:
        return value == best


class ServiceRecordValidator:
    """``/hm/service/<name>`` → a set of signed service entries, merged per peer.

    Against name squatting (throwaway keys filling a name's 64 slots), a
    server adds a new instance from a PUT_VALUE only when the PUT comes from
    that instance's own peer, from one of its homes (the prefix of its first
    IPv4 and of its first IPv6 address: a dual-stack node reaches some
    servers over either family), and fewer than
    MAX_SERVICE_INSTANCES_PER_PREFIX listed instances are held against the
    prefix it sends from. A listed instance is held against the one prefix
    the server admitted it from (remembered in ``PutOrigin.admitted``), not
    against every prefix it declares: an entry that names another
    operator's prefix, as a later address or as the home of its other
    family, uses none of that prefix's room, and a dual-stack instance takes
    one place, not one in each family. (So a squatter gets the room of each
    prefix it can send from, as one with two IPv4 prefixes does.) An
    instance the server does not remember admitting (listed before a
    restart, or its key forgotten as the least recently written) is held
    against every home it declares. Listed instances may be updated by
    anyone (the signature and sequence number suffice), so read repair
    still spreads renewals; a new instance spreads only by its own PUT_VALUEs.
    """

    def validate(self, key: bytes, value: bytes, now: float) -> None:
        self._verify_all(key, value, now)

    @staticmethod
    def _verify_all(key: bytes, value: bytes, now: float) -> list[ServiceRecord]:
        """Every entry, verified; unlike decode_service_set, one bad entry rejects the set.

        Only an entry whose addresses are all unreadable to us is skipped
        alone: it is signed and well-formed, just newer than our multiaddr table.
        """
        name = service_name_from_key(key)
        entries = _parse(kad_pb2.ServiceRecordSet, value).entries
        if not entries:
            raise RecordError("empty service record set")
        if len(entries) > MAX_SERVICE_INSTANCES:
            raise RecordError("service record set is too large")
        records = []
        for entry in entries:
            try:
                records.append(verify_service_entry(entry.SerializeToString(), name, now))
            except NoUsableAddressError:
                continue
        if not records:
            raise RecordError("no entry of the service record set has an address we can parse")
        return records

    def merge(self, key: bytes, existing: bytes | None, incoming: bytes, now: float, origin: PutOrigin | None = None) -> bytes:
        incoming_records = self._verify_all(key, incoming, now)
        merged = {r.peer_id: r for r in decode_service_set(key, existing, now)} if existing else {}
        accepted = 0
        for record in incoming_records:
            current = merged.get(record.peer_id)
            if current is not None and (
                record.seq < current.seq or (record.seq == current.seq and record.signed != current.signed)
            ):
                continue  # a replay or a conflicting entry at the same sequence number
            if current is None and (
                len(merged) >= MAX_SERVICE_INSTANCES
                or (origin is not None and not _may_add_instance(record, origin, merged.values()))
            ):
                continue
            if current is None and origin is not None:
                origin.admitted[record.peer_id] = origin.group
            merged[record.peer_id] = record
            accepted += 1
        if not accepted:
            raise RecordError("every entry is older than the one stored, or the service has no room for it")
        if origin is not None:
            for gone in [peer for peer in origin.admitted if peer not in merged]:
                del origin.admitted[gone]
        return encode_service_set([r.signed for r in merged.values()])

    def expires_at(self, key: bytes, value: bytes, now: float) -> float:
        records = decode_service_set(key, value, now)
        return float(max((r.expires_at for r in records), default=now))

    def is_current(self, key: bytes, value: bytes, best: bytes) -> bool:
        held = _entry_versions(value)
        return all(held.get(peer, -1) >= seq for peer, seq in _entry_versions(best).items())


def _ip_prefixes(record: ServiceRecord) -> list[str]:
    """The IP prefix (/24, /48) of each declared address that has an IP, in order."""
    return [g for g in (ip_group(a, exempt_private=False) for a in record.addrs) if g is not None]


def home_prefix(record: ServiceRecord) -> str | None:
    """The IP prefix (/24, /48) of an instance's first IP address (None: it declares none)."""
    return next(iter(_ip_prefixes(record)), None)


def home_prefixes(record: ServiceRecord) -> set[str]:
    """An instance's home in each IP family: the prefix of its first IPv4 and of its first IPv6 address."""
    first_per_family: dict[bool, str] = {}
    for prefix in _ip_prefixes(record):
        first_per_family.setdefault(":" in prefix, prefix)
    return set(first_per_family.values())


def _may_add_instance(record: ServiceRecord, origin: PutOrigin, listed) -> bool:
    """Whether a server adds this new instance on the word of ``origin`` (see ServiceRecordValidator)."""
    if record.peer_id != origin.peer:
        return False
    if origin.group is None:
        return True
    if origin.group not in home_prefixes(record):
        return False
    crowd = sum(1 for other in listed if origin.group in _held_against(other, origin.admitted))
    return crowd < MAX_SERVICE_INSTANCES_PER_PREFIX


def _held_against(record: ServiceRecord, admitted: dict[PeerId, str | None]) -> set[str]:
    """The prefixes whose room a listed instance fills: the one it was admitted from, else every home."""
    if record.peer_id in admitted:
        group = admitted[record.peer_id]
        return set() if group is None else {group}
    return home_prefixes(record)


def rank_service_instances(records: list[ServiceRecord], rng: random.Random) -> list[ServiceRecord]:
    """Instances in the order to try them.

    Weight is self-declared, so it ranks instances only within one home
    prefix (one operator's instances, as a rule): the prefixes take turns,
    in an order drawn from ``rng``, so that no prefix can put all of its
    instances ahead of the others by declaring weight 65535.
    """
    by_prefix: dict[str | None, list[ServiceRecord]] = {}
    for record in sorted(records, key=lambda r: (-r.weight, r.peer_id.multihash)):
        by_prefix.setdefault(home_prefix(record), []).append(record)
    turns = list(by_prefix.values())
    rng.shuffle(turns)
    return [record for row in itertools.zip_longest(*turns) for record in row if record is not None]


class NamespacedValidator:
    """Dispatches on the key's namespace; unknown namespaces are refused."""

    def __init__(self) -> None:
        self._validators: list[tuple[bytes, Validator]] = [
            (PK_NAMESPACE, PublicKeyValidator()),
            (SERVICE_NAMESPACE, ServiceRecordValidator()),
        ]

    def _for(self, key: bytes) -> Validator:
        for prefix, validator in self._validators:
            if key.startswith(prefix):
                return validator
        raise RecordError(f"no validator for the namespace of {key[:32]!r}")

    def validate(self, key: bytes, value: bytes, now: float) -> None:
        self._for(key).validate(key, value, now)

    def merge(self, key: bytes, existing: bytes | None, incoming: bytes, now: float, origin: PutOrigin | None = None) -> bytes:
        return self._for(key).merge(key, existing, incoming, now, origin)

    def expires_at(self, key: bytes, value: bytes, now: float) -> float:
        return self._for(key).expires_at(key, value, now)

    def is_current(self, key: bytes, value: bytes, best: bytes) -> bool:
        return self._for(key).is_current(key, value, best)
