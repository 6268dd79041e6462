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
import sys
from pathlib import Path

import trio

from hypermesh.transport.errors import TransportError
from hypermesh.transport.identity import IdentityError
from hypermesh.transport.multiaddrs import MultiaddrError

from .. import control
from ..logs import setup_logging
from . import capsule_commands, dht_commands, node_commands, transport_commands
from .common import EXIT_FAILURE, EXIT_OK, CommandError

COMMAND_GROUPS = (node_commands, transport_commands, dht_commands, capsule_commands)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hypermesh", description="HyperMesh peer-to-peer mesh node")
    parser.add_argument("--log-level", default="warning", help="debug, info, warning or error")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line (stderr)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_json)
    if hasattr(args, "data_dir") and args.data_dir is not None:
        args.data_dir = Path(args.data_dir).expanduser()
    # Command groups from other layers (capsule …) set ``func`` instead.
    handler = getattr(args, "handler", None) or args.func
    try:
        return handler(args) or EXIT_OK
    except KeyboardInterrupt:
        return 130
    except (CommandError, control.ControlError, TransportError, IdentityError, MultiaddrError, trio.TooSlowError, OSError) as exc:
        message = str(exc) or type(exc).__name__
        print(f"error: {message}", file=sys.stderr)
        return EXIT_FAILURE
    except BaseExceptionGroup as group:  # errors from inside a trio nursery
        leaf = _first_leaf(group)
        print(f"error: {leaf}", file=sys.stderr)
        return EXIT_FAILURE


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
