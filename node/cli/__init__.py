"""The ``hypermesh`` command line.

Flags and ``--json`` output shapes are a contract scripts rely on: every
command takes ``--data-dir``; with ``--json`` a command prints exactly one
JSON object on stdout (``run`` prints one as its first line); failures print
one ``error: …`` line on stderr and exit non-zero.

One module per command group registers its subcommands; this one builds
the parser and turns failures into that one line.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import trio

from hypermesh.transport.errors import TransportError
from hypermesh.transport.identity import IdentityError, key_path, load_identity
from hypermesh.transport.multiaddrs import MultiaddrError

from .. import control
from ..chain import ChainSetupError
from ..config import DEFAULT_DATA_DIR, SETTINGS, ConfigError, load_config
from ..datadir import DataDirBusy
from ..devnet import DevnetError
from ..logs import setup_logging
from . import (
    capsule_commands, chain_commands, config_commands, devnet_commands, dht_commands, genesis_commands, node_commands,
    transport_commands, trust_commands, validator_commands,
)
from .common import (
    EXIT_FAILURE, EXIT_OK, JSON_HELP, BadValue, CommandError, Parser, explicit_global_options, one_line,
)
from .version import print_version

SETTING_DESTS = {setting.dest for setting in SETTINGS}
COMMAND_GROUPS = (node_commands, config_commands, devnet_commands, transport_commands, dht_commands,
                  capsule_commands, trust_commands, genesis_commands, chain_commands, validator_commands)
# The commands that report a node identity they create themselves; for any
# other, main announces one.
REPORT_OWN_IDENTITY = {("init", None), ("run", None), ("capsule", "sign")}
EXIT_INTERRUPTED = 130  # as a shell reports a command ended by SIGINT

log = logging.getLogger("hypermesh.node")


def build_parser() -> Parser:
    parser = Parser(prog="hypermesh", description="HyperMesh peer-to-peer mesh node")
    parser.add_argument("--version", action="store_true",
                        help="print the version of hypermesh and its main libraries, and the protocols it speaks")
    parser.add_argument("--json", action="store_true", help=f"with --version: {JSON_HELP}")
    # Not required, so that --version needs no command; parse_command_line asks for one.
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def parse_command_line(argv: list[str] | None = None) -> argparse.Namespace:
    """The parsed command line with every global option set. Raises
    :class:`BadValue` for a refused value; exits 2 for a malformed line."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None and not args.version:
        parser.error("give a command")
    given = explicit_global_options(argv)
    args.data_dir = Path(given.get("data_dir", DEFAULT_DATA_DIR)).expanduser()
    # The settings given as flags; apply_config fills in the rest.
    args.flags = {**{s.dest: getattr(args, s.dest) for s in SETTINGS if getattr(args, s.dest, None) is not None},
                  **{dest: value for dest, value in given.items() if dest in SETTING_DESTS}}
    return args


def apply_config(args: argparse.Namespace, environ=os.environ) -> None:
    """Every setting on ``args``: flag > environment > config.toml > default."""
    args.config = load_config(args.data_dir, args.flags, environ)
    for dest, value in args.config.values.items():
        setattr(args, dest, value)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_command_line(argv)
    except BadValue as exc:
        return _fail(str(exc))
    except BrokenPipeError:  # --help | head
        return _closed_stdout()
    try:
        apply_config(args)
    except ConfigError as exc:
        return _fail(str(exc))
    setup_logging(args.log_level, args.log_json)
    if args.command is None:  # --version
        print_version(args.json)
        return EXIT_OK
    # Command groups from other layers (capsule …) set ``func`` instead.
    handler = getattr(args, "handler", None) or args.func
    had_identity = key_path(args.data_dir).exists()
    try:
        return handler(args) or EXIT_OK
    except BaseException as exc:  # noqa: BLE001 - the contract: one line, never a traceback
        return _report(exc)
    finally:
        subcommand = getattr(args, f"{args.command}_command", None)
        if not had_identity and (args.command, subcommand) not in REPORT_OWN_IDENTITY:
            _announce_new_identity(args.data_dir)


def _announce_new_identity(data_dir: Path) -> None:
    """A command other than init/run that made the node's key says so: the key
    is the node's name, and signing with a fresh one must not go unnoticed."""
    if key_path(data_dir).exists():
        print(f"note: created a new node identity {load_identity(data_dir).peer_id} in {key_path(data_dir)}",
              file=sys.stderr)


def _report(exc: BaseException) -> int:
    leaves = list(_leaves(exc))
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    if any(isinstance(leaf, BrokenPipeError) for leaf in leaves):
        return _closed_stdout()
    leaf = next((leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled)), leaves[0])
    if isinstance(leaf, SystemExit):
        return leaf.code if isinstance(leaf.code, int) else _fail(str(leaf.code))
    if isinstance(leaf, (CommandError, control.ControlError, ChainSetupError, DataDirBusy, DevnetError,
                         TransportError, IdentityError, MultiaddrError, OSError)):
        return _fail(str(leaf) or type(leaf).__name__)
    # A bug, not a user's mistake: still one line; the traceback at --log-level debug.
    log.debug("unexpected failure", exc_info=leaf)
    return _fail(f"{type(leaf).__name__}: {leaf}" if str(leaf) else type(leaf).__name__)


def _fail(message: str) -> int:
    print(f"error: {one_line(message.splitlines()[0]) if message else 'failed'}", file=sys.stderr)
    return EXIT_FAILURE


def _closed_stdout() -> int:
    """The reader of our stdout went away (``| head``): not an error. Point
    stdout at /dev/null so the interpreter's final flush fails no more."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


def _leaves(exc: BaseException):
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc
