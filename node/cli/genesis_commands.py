"""``hypermesh genesis new``: the genesis file a chain starts from (consensus/genesis.py has its format)."""

from __future__ import annotations

import argparse
import json
from dataclasses import fields, replace
from pathlib import Path

from hypermesh.consensus.genesis import Genesis, GenesisBond, GenesisError, LedgerParams, account_of, genesis_to_json
from hypermesh.consensus.ledger_tx import Role
from hypermesh.consensus.signing import ConsensusKey, ConsensusKeyError, public_key_from_base64, scheme_named

from .common import EXIT_OK, CommandError, add_command

DEFAULT_CHAIN_ID = "hypermesh-1"
PARAMETERS = {f.name for f in fields(LedgerParams)}


def _account(text: str) -> bytes:
    try:
        return account_of(text)
    except GenesisError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _units(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{what} {text!r} is not a whole number of units") from None


def validator_entry(text: str) -> tuple[bytes, int | None, ConsensusKey | None]:
    """``PEER_ID[:POWER][:ml-dsa-65=KEY]``, KEY the public key in base64 or ``@FILE`` (what
    ``hypermesh validator key`` prints: the base64 line, or its --json object)."""
    peer, *parts = text.split(":")
    power: int | None = None
    key: ConsensusKey | None = None
    for position, part in enumerate(parts):
        label, is_key, value = part.partition("=")
        if is_key and key is None:
            key = _consensus_key(label, value)
        elif not is_key and position == 0:
            power = _units(part, "power") if part else None
        else:
            raise argparse.ArgumentTypeError(f"{text!r} is not PEER_ID[:POWER][:ml-dsa-65=BASE64|@FILE]")
    return _account(peer), power, key


def _consensus_key(label: str, value: str) -> ConsensusKey:
    try:
        scheme = scheme_named(label)
        if value.startswith("@"):
            return _key_from_file(scheme, Path(value[1:]).expanduser())
        return ConsensusKey(scheme, public_key_from_base64(value))
    except ConsensusKeyError as exc:
        raise argparse.ArgumentTypeError(f"consensus key: {exc}") from None


def _key_from_file(scheme, path: Path) -> ConsensusKey:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConsensusKeyError(f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not text.startswith("{"):
        return ConsensusKey(scheme, public_key_from_base64(text))
    try:
        shown = json.loads(text)
        key = ConsensusKey.from_json({"scheme": shown["scheme"], "public_key": shown["public_key"]})
    except (ValueError, KeyError, TypeError):
        raise ConsensusKeyError(f"{path} is not what `hypermesh validator key --json` prints") from None
    if key.scheme is not scheme:
        raise ConsensusKeyError(f"{path} holds an {key.scheme.label} key, not {scheme.label}")
    return key


def allocation_entry(text: str) -> tuple[bytes, int]:
    """``PEER_ID:AMOUNT``."""
    peer, separator, amount = text.partition(":")
    if not separator:
        raise argparse.ArgumentTypeError(f"{text!r} is not PEER_ID:AMOUNT")
    return _account(peer), _units(amount, "amount")


def parameter_entry(text: str) -> tuple[str, int]:
    """``NAME=VALUE`` for a ledger parameter."""
    name, separator, value = text.partition("=")
    if not separator or name not in PARAMETERS:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE with NAME one of {', '.join(sorted(PARAMETERS))}")
    return name, _units(value, name)


def build_genesis(chain_id: str, validators, allocations, parameters) -> Genesis:
    """The genesis of these entries, checked (GenesisError names a broken rule)."""
    params = replace(LedgerParams(), **dict(parameters))
    balances: dict[bytes, int] = {}
    for account, amount in allocations:
        if account in balances:
            raise GenesisError("an account is allocated twice")
        balances[account] = amount
    bonds = tuple(GenesisBond(account, Role.VALIDATOR, params.min_validator_stake if power is None else power, key)
                  for account, power, key in validators)
    genesis = Genesis(chain_id, params, balances, bonds)
    genesis.check()
    return genesis


def cmd_genesis_new(args) -> int:
    try:
        genesis = build_genesis(args.chain_id, args.validators, args.allocations or [], args.params or [])
    except GenesisError as exc:
        raise CommandError(f"genesis: {exc}") from None
    text = genesis_to_json(genesis)
    print(json.dumps(json.loads(text), sort_keys=True) if args.json else text)
    return EXIT_OK


def register(commands) -> None:
    about = "make the genesis file a chain starts from"
    group = commands.add_parser("genesis", help=about, description=about).add_subparsers(
        dest="genesis_command", required=True, metavar="COMMAND")
    new = add_command(group, "new", cmd_genesis_new,
                      "print a genesis file (JSON) on stdout: its validators bond their power as stake")
    new.add_argument("--validator", dest="validators", action="append", required=True, type=validator_entry,
                     metavar="PEER_ID[:POWER][:ml-dsa-65=KEY]",
                     help="an initial validator, bonding POWER units (default and minimum: the validator "
                          "minimum stake, 10000), signing votes with the ML-DSA-65 public KEY if given "
                          "(base64, or @FILE holding what `hypermesh validator key` printed on its node), "
                          "else with its identity key; repeatable")
    new.add_argument("--allocation", dest="allocations", action="append", type=allocation_entry,
                     metavar="PEER_ID:AMOUNT", help="a balance of AMOUNT units at genesis; repeatable")
    new.add_argument("--chain-id", default=DEFAULT_CHAIN_ID, metavar="ID",
                     help=f"the chain's name, which every transaction signs (default {DEFAULT_CHAIN_ID})")
    new.add_argument("--param", dest="params", action="append", type=parameter_entry, metavar="NAME=VALUE",
                     help="a ledger parameter other than its default, e.g. epoch_length=100 or "
                          "min_validator_stake=10000; repeatable")
