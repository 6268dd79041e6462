"""``hypermesh validator key``: the key this node signs consensus messages with (node/validator_key.py)."""

from __future__ import annotations

import base64

from hypermesh.consensus.signing import SCHEME_LABELS, Scheme, ml_dsa_public_key, public_key_of, scheme_named
from hypermesh.transport.identity import key_path, load_identity

from ..validator_key import ValidatorKeyError, init_ml_dsa_key, ml_dsa_key_path
from .common import CommandError, add_command, key_value_lines, show


def cmd_validator_key(args) -> int:
    scheme = scheme_named(args.scheme)
    if scheme is Scheme.ED25519:
        result = {"scheme": scheme.label, "public_key": base64.b64encode(public_key_of(
            load_identity(args.data_dir))).decode(), "created": False, "path": str(key_path(args.data_dir))}
    else:
        try:
            key, created = init_ml_dsa_key(args.data_dir)
        except ValidatorKeyError as exc:
            raise CommandError(str(exc)) from None
        result = {**ml_dsa_public_key(key).to_json(), "created": created, "path": str(ml_dsa_key_path(args.data_dir))}
    return show(args, result, key_value_lines)


def register(commands) -> None:
    about = "this node's keys as a validator"
    group = commands.add_parser("validator", help=about, description=about).add_subparsers(
        dest="validator_command", required=True, metavar="COMMAND")
    key = add_command(group, "key", cmd_validator_key,
                      "print the public key this node signs consensus messages with (base64), creating an "
                      "ML-DSA-65 key in the data directory if it has none; `scheme` and `public_key` are a "
                      "genesis bond's consensus_key")
    key.add_argument("--scheme", choices=SCHEME_LABELS, default=Scheme.ML_DSA_65.label,
                     help="ml-dsa-65 (default): the post-quantum key, made on first use and signed with by "
                          "`hypermesh run --validator` once the chain has it; ed25519: the identity key, "
                          "what a validator without a declared key signs with")
