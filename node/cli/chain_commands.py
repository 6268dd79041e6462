"""The chain of the running node: ``hypermesh chain | account | transfer | stake | escrow | validators``.

Each needs a node running with ``--genesis`` in ``--data-dir`` (the ledger
lives in it); transactions are signed with that node's identity key and the
command returns once a block holds them, or fails with the ledger's reason.
"""

from __future__ import annotations

from hypermesh.consensus.ledger_tx import MAX_AMOUNT, MAX_HEIGHT, MAX_LOCK_TTL_MS, MAX_TOKEN

from .. import control
from ..chain_operations import COMMIT_TIMEOUT, ROLES
from .common import add_command, node_command, seconds, whole_number

NEEDS_NODE = "the chain runs in the node (with --genesis FILE)"
# The control socket gives a request this long; a wait must end before it.
MAX_WAIT_SECONDS = control.REQUEST_TIMEOUT - 10
amount = whole_number(1, MAX_AMOUNT)


def chain_command(command: str, lines, **fixed):
    return node_command(command, lines, short_lived=False, why=NEEDS_NODE, **fixed)


def _status_lines(result):
    role = "validator" if result["validator"] else ("validator-to-be" if result["signing"] else "follower")
    yield f"chain {result['chain_id']} at height {result['height']} (round {result['round']}), this node: {role}"
    yield f"state root:  {result['state_root']}"
    yield f"validators:  {result['validators']} (total power {result['total_power']})"
    yield f"mempool:     {result['mempool']} transaction(s)"
    yield f"started from {result['origin']}"


def _block_lines(result):
    yield f"block {result['height']} {result['block_id']} ({result['size']} bytes, round " \
          f"{result['certificate']['round']}, {result['certificate']['signatures']} signatures)"
    yield f"parent state root: {result['parent_root']}"
    for tx in result["transactions"]:
        details = " ".join(f"{k}={v}" for k, v in tx.items() if k not in ("tx_id", "kind", "sender", "nonce"))
        yield f"  {tx['tx_id'][:16]}  {tx['kind']:<14} {tx['sender']} #{tx['nonce']}  {details}"
    if result["evidence"]:
        yield f"  {result['evidence']} evidence of double signing"


def _account_lines(result):
    yield f"account {result['peer_id']} at height {result['height']}"
    yield f"balance:   {result['balance']}"
    yield f"nonce:     {result['nonce']}"
    yield f"bonded:    validator {result['bonded']['validator']}, provider {result['bonded']['provider']}"
    yield f"unbonding: {result['unbonding']}"
    if result["validator_power"]:
        yield f"validator with power {result['validator_power']}"
    if result["jailed"]:
        yield "jailed"


def _validators_lines(result):
    yield f"{len(result['validators'])} validators at height {result['height']}, total power {result['total_power']}"
    for validator in result["validators"]:
        link = {True: "connected", False: "not connected", None: "this node"}[validator["connected"]]
        yield f"  {validator['peer_id']}  power {validator['power']}  {validator['scheme']}  ({link})"


def _tx_lines(result):
    yield f"committed at height {result['height']}: transaction {result['tx_id']}"
    if "escrow_id" in result:
        yield f"escrow {result['escrow_id']}"


def _lock_lines(result):
    verb = {"granted": "held by this node", "released": "released"}.get(result["outcome"], result["outcome"])
    yield f"lock {result['name']}: {verb} (token {result['token']}), decided at height {result['height']}"
    if result["outcome"] == "granted":
        yield f"lease until block time {result['expiry_ms']} ms (now {result['time_ms']} ms)"


def _lock_show_lines(result):
    if result["held"]:
        yield f"lock {result['name']} at height {result['height']}: held by {result['holder']} " \
              f"(token {result['token']}) until block time {result['expiry_ms']} ms"
    else:
        yield f"lock {result['name']} at height {result['height']}: free"
    if "proof" in result:
        yield f"proof (commit and Merkle proof, against the {len(result['validators'])} validators of chain " \
              f"{result['chain_id']}):"
        yield result["proof"]


def _add_timeout(parser, what: str, default: float = COMMIT_TIMEOUT) -> None:
    parser.add_argument("--timeout", type=seconds(0, MAX_WAIT_SECONDS), default=default, metavar="SECONDS",
                        help=f"give up waiting for {what} after this long, 0 to {MAX_WAIT_SECONDS:g} "
                             f"(default {default:g})")


def _transaction(group, subcommand: str, operation: str, help_text: str, lines=_tx_lines, **fixed):
    """A subcommand that signs and submits a transaction and waits for its block."""
    parser = add_command(group, subcommand, chain_command(operation, lines, timeout="timeout", **fixed), help_text)
    _add_timeout(parser, "a block holding the transaction")
    return parser


def _group(commands, name: str, about: str):
    return commands.add_parser(name, help=about, description=about).add_subparsers(
        dest=f"{name}_command", required=True, metavar="COMMAND")


def register(commands) -> None:
    chain = _group(commands, "chain", "the running node's chain: its height, blocks and progress")
    add_command(chain, "status", chain_command("chain.status", _status_lines),
                "the chain's height, state root, validator set size and whether this node signs")
    block = add_command(chain, "block", chain_command("chain.block", _block_lines, height="height"),
                        "the decided block at a height, with its transactions")
    block.add_argument("height", type=whole_number(1), help="the block's height (1 is the first)")
    wait = add_command(chain, "wait", chain_command("chain.wait", _status_lines, height="height",
                                                    timeout="timeout"),
                       "wait until the node's chain has started and executed --height")
    wait.add_argument("--height", type=whole_number(0), default=1, metavar="N",
                      help="the height to wait for (default 1; 0: only until the chain has started)")
    _add_timeout(wait, "the height")

    account = _group(commands, "account", "accounts on the chain: balance, nonce, stake")
    show = add_command(account, "show", chain_command("chain.account", _account_lines, peer="peer"),
                       "an account's balance, nonce, bonded and unbonding stake")
    show.add_argument("peer", nargs="?", default=None,
                      help="the account's peer ID (default: this node's own account)")

    transfer = _transaction(commands, "transfer", "chain.transfer",
                            "send AMOUNT units from this node's account to another", to="to", amount="amount")
    transfer.add_argument("to", help="the receiving account's peer ID")
    transfer.add_argument("amount", type=amount, help="whole units to send")

    stake = _group(commands, "stake", "bond and unbond this node's stake")
    for name, verb, fields in (("bond", "move AMOUNT units of the balance into stake for a role",
                                {"consensus_key": "consensus_key"}),
                               ("unbond", "start returning AMOUNT units of stake to the balance (after the "
                                          "unbonding period, during which it can still be slashed)", {})):
        parser = _transaction(stake, name, f"chain.{name}", verb, amount="amount", role="role", **fields)
        parser.add_argument("amount", type=amount, help="whole units")
        parser.add_argument("--role", choices=tuple(ROLES), default="validator",
                            help="the role the stake is for: validator or provider (default validator; "
                                 "each has a minimum stake, 10000 by default)")
    stake.choices["bond"].add_argument(
        "--consensus-key", action="store_true",
        help="declare this node's ML-DSA-65 key (`hypermesh validator key`) as what it signs votes with, "
             "from the next validator set on (the bond carries the key's proof of possession)")

    escrow = _group(commands, "escrow", "pay for compute through escrow on the chain")
    opened = _transaction(escrow, "open", "chain.escrow_open",
                          "lock AMOUNT units for a task with a provider until a deadline; prints the escrow ID",
                          provider="provider", amount="amount", deadline="deadline", task="task")
    opened.add_argument("provider", help="the provider's peer ID (it must have a provider bond)")
    opened.add_argument("amount", type=amount, help="whole units to lock")
    opened.add_argument("--deadline", type=whole_number(1, MAX_HEIGHT), required=True, metavar="HEIGHT",
                        help="the last height at which the escrow can be released; refundable after it")
    opened.add_argument("--task", default="", metavar="REF",
                        help="the task's reference: 64 hex digits, or any text (then its SHA-256)")
    release = _transaction(escrow, "release", "chain.escrow_release",
                           "pay an escrow to its provider, accepting its result (only its client may)",
                           escrow_id="escrow_id", result="result")
    release.add_argument("escrow_id", help="the escrow's ID, as `escrow open` printed it")
    release.add_argument("--result", default="", metavar="REF",
                         help="the accepted result's reference: 64 hex digits, or any text (then its SHA-256)")
    refund = _transaction(escrow, "refund", "chain.escrow_refund",
                          "take an escrow back after its deadline (only its client may)", escrow_id="escrow_id")
    refund.add_argument("escrow_id", help="the escrow's ID, as `escrow open` printed it")

    lock = _group(commands, "lock", "locks on the chain: leases with fencing tokens, in block time")
    ttl = seconds(0.001, MAX_LOCK_TTL_MS / 1000)
    token = whole_number(1, MAX_TOKEN)
    acquire = _transaction(lock, "acquire", "lock.acquire",
                           "take lock NAME for --ttl seconds of block time; refused while another lease is live",
                           _lock_lines, name="name", ttl="ttl")
    renew = _transaction(lock, "renew", "lock.renew", "extend this node's live lease on NAME to --ttl from now",
                         _lock_lines, name="name", ttl="ttl", token="token")
    release = _transaction(lock, "release", "lock.release", "give up this node's lease on NAME",
                           _lock_lines, name="name", token="token")
    for parser in (acquire, renew, release):
        parser.add_argument("name", help="the lock's name (1 to 64 bytes)")
    for parser in (acquire, renew):
        parser.add_argument("--ttl", type=ttl, default=10.0, metavar="SECONDS",
                            help=f"how long the lease lasts, in block time (default 10, at most "
                                 f"{MAX_LOCK_TTL_MS // 1000})")
    for parser in (renew, release):
        parser.add_argument("--token", type=token, default=None, metavar="N",
                            help="the lease's fencing token (default: that of this node's live lease)")
    show_lock = add_command(lock, "show", chain_command("lock.show", _lock_show_lines, name="name", proof="proof"),
                            "who holds lock NAME in the last certified state, checked against its proof")
    show_lock.add_argument("name", help="the lock's name")
    show_lock.add_argument("--proof", action="store_true",
                           help="also print the proof (commit certificate and Merkle proof, hex) and the "
                                "validators it verifies against, for checking offline")

    add_command(commands, "validators", chain_command("chain.validators", _validators_lines),
                "the current validator set: each validator's power and whether this node is connected to it")
