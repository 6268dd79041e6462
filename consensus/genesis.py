"""The genesis file: chain ID, parameters, allocations and the initial bonds.

JSON, one object::

    {"chain_id": "hypermesh-1",
     "params": {"min_stake": {"validator": 10000, "provider": 10000}, ...},
     "accounts": [{"peer_id": "12D3Koo…", "balance": 50000}],
     "bonds": [{"peer_id": "12D3Koo…", "role": "validator", "amount": 10000},
               {"peer_id": "12D3Koo…", "role": "validator", "amount": 10000,
                "consensus_key": {"scheme": "ml-dsa-65", "public_key": "<base64, 1952 bytes>"}}]}

Accounts are named by Ed25519 peer IDs (the node identity); a bond of the
validator role at genesis makes its owner one of the initial validators,
with voting power equal to the bonded amount; its ``consensus_key``, if
given, is what it signs votes with (signing.py; without one, its Ed25519
identity key). Unlike a bond transaction, a genesis key carries no proof of
possession: whoever assembles the genesis vouches for it, as for the rest
of the file, and a validator given a key it does not hold only fails to
sign. Parameters left out take the
defaults of :class:`LedgerParams`. The supply is the sum of balances and
bonds; nothing is minted after genesis (no block rewards yet).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields

from hypermesh.transport.identity import KEY_TYPE_ED25519, IdentityError, PeerId, decode_public_key, encode_public_key

from .ledger_tx import MAX_AMOUNT, MAX_CHAIN_ID_SIZE, Role
from .signing import ConsensusKey, ConsensusKeyError
from .validators import MAX_VALIDATORS, PUBLIC_KEY_SIZE

# Bounds the file a node reads at start (accounts × ~100 bytes).
MAX_GENESIS_SIZE = 16 << 20


class GenesisError(ValueError):
    """A genesis file that is malformed or breaks a rule."""


@dataclass(frozen=True, slots=True)
class LedgerParams:
    min_validator_stake: int = 10_000
    min_provider_stake: int = 10_000
    # Validator-set changes from bonding take effect at heights that are multiples of this.
    epoch_length: int = 100
    # Unbonded stake returns to the balance this many blocks later; until then it can be slashed
    # (at least epoch_length + max_evidence_age).
    unbonding_period: int = 1_000
    max_validators: int = 100
    # Double signing: this share (basis points) of bonded and unbonding stake is burned.
    double_sign_slash_bps: int = 500
    # Downtime: a validator absent from this many consecutive commit certificates is jailed.
    downtime_window: int = 50
    # A jailed validator may unjail this many blocks after being jailed.
    jail_period: int = 100
    # Evidence older than this many blocks is refused (its stake may have left).
    max_evidence_age: int = 500
    max_block_transactions: int = 1_000

    def min_stake(self, role: Role) -> int:
        return self.min_validator_stake if role is Role.VALIDATOR else self.min_provider_stake

    def check(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= MAX_AMOUNT:
                raise GenesisError(f"parameter {f.name} must be a positive integer")
        if self.double_sign_slash_bps > 10_000:
            raise GenesisError("double_sign_slash_bps must be at most 10000")
        if self.max_validators > MAX_VALIDATORS:
            raise GenesisError(f"max_validators must be at most {MAX_VALIDATORS}")
        if self.unbonding_period < self.epoch_length + self.max_evidence_age:
            # A validator that unbonds stays in the set up to an epoch longer,
            # and its last votes can be proven against it for max_evidence_age more.
            raise GenesisError("unbonding_period must cover epoch_length + max_evidence_age (stake must stay slashable)")


@dataclass(frozen=True, slots=True)
class GenesisBond:
    owner: bytes
    role: Role
    amount: int
    consensus_key: ConsensusKey | None = None  # validators only


@dataclass(frozen=True)
class Genesis:
    chain_id: str
    params: LedgerParams = field(default_factory=LedgerParams)
    balances: dict[bytes, int] = field(default_factory=dict)
    bonds: tuple[GenesisBond, ...] = ()

    def supply(self) -> int:
        return sum(self.balances.values()) + sum(b.amount for b in self.bonds)

    def check(self) -> None:
        if not 0 < len(self.chain_id.encode()) <= MAX_CHAIN_ID_SIZE:
            raise GenesisError(f"chain_id must be 1..{MAX_CHAIN_ID_SIZE} bytes")
        self.params.check()
        for key, balance in self.balances.items():
            if len(key) != PUBLIC_KEY_SIZE or not 0 <= balance <= MAX_AMOUNT:
                raise GenesisError("an account needs a 32-byte key and a balance in 0..2^62")
        seen = set()
        for bond in self.bonds:
            if (bond.owner, bond.role) in seen:
                raise GenesisError("a peer bonds twice for one role")
            seen.add((bond.owner, bond.role))
            if len(bond.owner) != PUBLIC_KEY_SIZE or bond.amount < self.params.min_stake(bond.role):
                raise GenesisError(f"a genesis bond of {bond.amount} is below the {bond.role.name.lower()} minimum")
            if bond.consensus_key is not None and bond.role is not Role.VALIDATOR:
                raise GenesisError(f"bond of {peer_id_of(bond.owner)}: only a validator bond has a consensus_key")
        if self.supply() > MAX_AMOUNT:
            raise GenesisError("the supply exceeds 2^62")
        if not any(b.role is Role.VALIDATOR for b in self.bonds):
            raise GenesisError("genesis needs at least one validator bond")


def peer_id_of(account: bytes) -> PeerId:
    """The peer ID of an account (the Ed25519 key inlined in an identity multihash)."""
    return PeerId.from_public_key(encode_public_key(KEY_TYPE_ED25519, account))


def account_of(peer_id: str) -> bytes:
    """The account key a base58 peer ID names; only Ed25519 peer IDs have accounts."""
    try:
        proto = PeerId.from_base58(peer_id).inlined_public_key()
        if proto is None:
            raise GenesisError(f"peer ID {peer_id} does not inline its key")
        key_type, key = decode_public_key(proto)
    except IdentityError as exc:
        raise GenesisError(str(exc)) from None
    if key_type != KEY_TYPE_ED25519 or len(key) != PUBLIC_KEY_SIZE:
        raise GenesisError(f"peer ID {peer_id} is not an Ed25519 key")
    return key


def _role_named(name: object) -> Role:
    try:
        return Role[str(name).upper()]
    except KeyError:
        raise GenesisError(f"unknown role {name!r}") from None


def _integer(value: object, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise GenesisError(f"{what} must be an integer")
    return value


def _bond(entry: dict) -> GenesisBond:
    owner = account_of(entry["peer_id"])
    key = None
    if "consensus_key" in entry:
        try:
            key = ConsensusKey.from_json(entry["consensus_key"])
        except ConsensusKeyError as exc:
            raise GenesisError(f"bond of {entry['peer_id']}: consensus_key: {exc}") from None
    return GenesisBond(owner, _role_named(entry["role"]), _integer(entry["amount"], "amount"), key)


def _bond_json(bond: GenesisBond) -> dict:
    entry = {"peer_id": peer_id_of(bond.owner).to_base58(), "role": bond.role.name.lower(), "amount": bond.amount}
    if bond.consensus_key is not None:
        entry["consensus_key"] = bond.consensus_key.to_json()
    return entry


def parse_genesis(text: str | bytes) -> Genesis:
    if len(text) > MAX_GENESIS_SIZE:
        raise GenesisError(f"genesis exceeds {MAX_GENESIS_SIZE} bytes")
    try:
        data = json.loads(text)
        raw_params = dict(data.get("params", {}))
        min_stake = raw_params.pop("min_stake", {})
        if "validator" in min_stake:
            raw_params["min_validator_stake"] = min_stake["validator"]
        if "provider" in min_stake:
            raw_params["min_provider_stake"] = min_stake["provider"]
        unknown = set(raw_params) - {f.name for f in fields(LedgerParams)}
        if unknown:
            raise GenesisError(f"unknown parameters {sorted(unknown)}")
        balances: dict[bytes, int] = {}
        for entry in data.get("accounts", []):
            key = account_of(entry["peer_id"])
            if key in balances:
                raise GenesisError("an account appears twice")
            balances[key] = _integer(entry["balance"], "balance")
        bonds = tuple(_bond(entry) for entry in data.get("bonds", []))
        chain_id = data["chain_id"]
        if not isinstance(chain_id, str):
            raise GenesisError("chain_id must be a string")
        genesis = Genesis(chain_id, LedgerParams(**raw_params), balances, bonds)
    except GenesisError:
        raise
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise GenesisError(f"malformed genesis: {exc!r}") from None
    genesis.check()
    return genesis


def genesis_to_json(genesis: Genesis) -> str:
    params = asdict(genesis.params)
    params["min_stake"] = {"validator": params.pop("min_validator_stake"),
                           "provider": params.pop("min_provider_stake")}
    return json.dumps({
        "chain_id": genesis.chain_id,
        "params": params,
        "accounts": [{"peer_id": peer_id_of(k).to_base58(), "balance": v} for k, v in sorted(genesis.balances.items())],
        "bonds": [_bond_json(b) for b in genesis.bonds],
    }, indent=2, sort_keys=True)


__all__ = ["Genesis", "GenesisBond", "GenesisError", "LedgerParams", "account_of", "genesis_to_json",
           "parse_genesis", "peer_id_of"]
