"""Trust policy: who may sign capsules for which trust zone, and what each zone may use.

A zone is a ceiling. A capsule's effective limits are the smaller of what its
manifest asks for and what its zone allows, and it may only require the
capabilities its zone grants: a capsule asking for more is quarantined at
admission rather than silently cut down, so its author sees why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hypermesh.transport.identity import IdentityError, PeerId

from . import schema
from .errors import FormatError
from .manifest import CAPABILITIES, TRUST_ZONES, Manifest, Resources
from .storage import atomic_write

POLICY_FORMAT = "hypermesh-trust-policy/1"
POLICY_FILE = "capsule-trust.json"


@dataclass(frozen=True, slots=True)
class ZoneLimits:
    fuel: int
    memory_bytes: int
    timeout_ms: int
    capabilities: frozenset[str]


MiB = 1024 * 1024
DEFAULT_ZONE_LIMITS: dict[str, ZoneLimits] = {
    "system": ZoneLimits(50_000_000_000, 1024 * MiB, 60_000, frozenset(CAPABILITIES)),
    "tenant": ZoneLimits(10_000_000_000, 512 * MiB, 10_000, frozenset(CAPABILITIES)),
    "session": ZoneLimits(2_000_000_000, 256 * MiB, 5_000, frozenset(CAPABILITIES)),
    # Experimental code gets no persistence and cannot call other capsules.
    "ephemeral": ZoneLimits(500_000_000, 128 * MiB, 1_000, frozenset({"log", "clock", "random"})),
}


@dataclass
class TrustPolicy:
    """Signers (by peer ID) and the zones each may sign for, plus the zone ceilings."""

    signers: dict[str, frozenset[str]] = field(default_factory=dict)
    zone_limits: dict[str, ZoneLimits] = field(default_factory=lambda: dict(DEFAULT_ZONE_LIMITS))

    def trust(self, peer_id: PeerId | str, zones: tuple[str, ...] | list[str] = TRUST_ZONES) -> None:
        unknown = set(zones) - set(TRUST_ZONES)
        if unknown:
            raise FormatError(f"unknown trust zones {sorted(unknown)}; zones are {list(TRUST_ZONES)}")
        key = str(peer_id)
        self.signers[key] = self.signers.get(key, frozenset()) | frozenset(zones)

    def allows(self, peer_id: PeerId, zone: str) -> bool:
        return zone in self.signers.get(peer_id.to_base58(), frozenset())

    def zones_for(self, peer_id: PeerId) -> frozenset[str]:
        return self.signers.get(peer_id.to_base58(), frozenset())

    def effective_resources(self, manifest: Manifest) -> Resources:
        """The manifest's limits, tightened by its trust zone's ceiling."""
        zone = self.zone_limits[manifest.trust_zone]
        asked = manifest.resources
        return Resources(
            fuel=min(asked.fuel, zone.fuel),
            memory_bytes=min(asked.memory_bytes, zone.memory_bytes),
            timeout_ms=min(asked.timeout_ms, zone.timeout_ms),
            max_output_bytes=asked.max_output_bytes,
        )

    def to_document(self) -> dict:
        return {
            "format": POLICY_FORMAT,
            "signers": [{"peer_id": peer, "zones": sorted(zones)} for peer, zones in sorted(self.signers.items())],
        }

    @classmethod
    def from_document(cls, doc: dict) -> "TrustPolicy":
        schema.validate(doc, schema.TRUST_POLICY, "trust policy")
        policy = cls()
        for entry in doc["signers"]:
            try:
                PeerId.from_base58(entry["peer_id"])
            except IdentityError as exc:
                raise FormatError(f"trust policy signer {entry['peer_id']!r}: {exc}") from None
            policy.trust(entry["peer_id"], entry["zones"])
        return policy

    @classmethod
    def load(cls, path: Path) -> "TrustPolicy":
        path = Path(path)
        if not path.exists():
            return cls()
        return cls.from_document(schema.parse_json(path.read_bytes(), str(path), 4 * MiB))

    def save(self, path: Path) -> None:
        atomic_write(Path(path), schema.canonical_json(self.to_document()))


def trust_signer(path: Path, peer_id: str, zones: list[str]) -> dict:
    """Let ``peer_id`` sign for ``zones`` in the policy file at ``path``; returns the new policy document."""
    try:
        PeerId.from_base58(peer_id)
    except IdentityError as exc:
        raise FormatError(f"not a peer ID: {peer_id!r} ({exc})") from None
    policy = TrustPolicy.load(path)
    policy.trust(peer_id, zones)
    policy.save(path)
    return policy.to_document()
