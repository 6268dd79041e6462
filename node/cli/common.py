"""What every ``hypermesh`` command shares: the failure type, output helpers,
value types for options, and how a command reaches its node."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import trio

from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity, init_identity, key_path, load_identity

from .. import control, operations
from ..config import DEFAULT_DATA_DIR

# A short-lived node (a CLI command with no running node) listens only so
# that the peers it asks can answer it.
SHORT_LIVED_LISTEN = ["/ip6/::/udp/0/quic-v1", "/ip4/0.0.0.0/udp/0/quic-v1"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure to report as one line, with exit status 1."""


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def show(args, result, lines) -> int:
    """``result`` as one JSON line with ``--json``, else as the text ``lines(result)``."""
    if args.json:
        print_json(result)
    else:
        for line in lines(result):
            print(line)
    return EXIT_OK


def key_value_lines(result):
    for key, value in result.items():
        yield f"{key}: {value}"


def add_command(group, name: str, handler, help_text: str) -> argparse.ArgumentParser:
    """A subcommand with the options every command takes."""
    sub = group.add_parser(name, help=help_text, description=help_text)
    sub.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="node directory (default ~/.hypermesh)")
    sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    sub.set_defaults(handler=handler)
    return sub


def add_bootstrap_option(sub: argparse.ArgumentParser) -> argparse.ArgumentParser:
    sub.add_argument("--bootstrap", action="append", default=[], metavar="MADDR",
                     help="when no node runs in --data-dir: peer to join for this command")
    return sub


# -- option value types ----------------------------------------------------------


def byte_count(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("ib").removesuffix("b")
    factor = units.get(text[-1:], 1)
    number = text[:-1] if text[-1:] in units else text
    try:
        value = int(float(number) * factor)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a byte count: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("byte count must not be negative")
    return value


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# -- reaching the node ------------------------------------------------------------


def client_identity(data_dir: Path) -> Identity:
    """The node's identity when it has one; a throwaway one for a pure client."""
    if key_path(data_dir).exists():
        return load_identity(data_dir)
    return Identity.generate()


class _HostOnly:
    def __init__(self, host):
        self.host = host


async def on_node(args, command: str, on_progress=None, **params):
    """Run an operation on the node of ``--data-dir``: through its control
    socket when it is running, else on a short-lived node with its identity
    (a throwaway one for transport-only commands on an uninitialised dir)."""
    from hypermesh.dht.kademlia import Mode

    if control.node_is_running(args.data_dir):
        try:
            return await control.call(args.data_dir, command, on_progress=on_progress, **params)
        except control.ControlError as exc:
            if "no node is running" not in str(exc):
                raise CommandError(str(exc)) from None
    operation = operations.OPERATIONS[command]
    if command in operations.TRANSPORT_ONLY:
        async with open_host(client_identity(args.data_dir)) as host:
            return await operation(_HostOnly(host), **params)
    bootstrap = getattr(args, "bootstrap", None) or []
    if not bootstrap:
        raise CommandError(
            f"no node is running in {args.data_dir}: start one with `hypermesh run`, or give --bootstrap MADDR"
        )
    from ..node import open_node

    identity, _ = init_identity(args.data_dir)
    async with open_node(identity, args.data_dir, SHORT_LIVED_LISTEN, bootstrap, dht_mode=Mode.CLIENT) as node:
        for addr in bootstrap:
            await node.host.connect(addr)
        await node.discovery.service.bootstrap()
        if on_progress is not None:
            params["progress"] = on_progress
        return await operation(node, **params)


def node_command(command: str, lines, progress_bar: bool = False, **fixed):
    """A CLI handler running ``command`` on the node, with arguments from args."""

    def handler(args) -> int:
        params = {name: getattr(args, attribute) for name, attribute in fixed.items()}
        bar = ProgressBar(sys.stderr) if progress_bar and not args.json and sys.stderr.isatty() else None

        async def run():
            return await on_node(args, command, on_progress=bar.update if bar else None, **params)

        try:
            result = trio.run(run)
        finally:
            if bar is not None:
                bar.finish()
        return show(args, result, lines)

    return handler


class ProgressBar:
    """``[#####.....]  45%  1.2 / 2.6 MB`` redrawn in place on a terminal."""

    WIDTH = 30

    def __init__(self, stream):
        self._stream = stream
        self._drawn = False

    def update(self, progress: dict) -> None:
        done, total = progress.get("done", 0), max(1, progress.get("total", 1))
        filled = min(self.WIDTH, self.WIDTH * done // total)
        self._stream.write(
            f"\r[{'#' * filled}{'.' * (self.WIDTH - filled)}] {100 * done // total:3d}%  "
            f"{done / 1e6:.1f} / {total / 1e6:.1f} MB"
        )
        self._stream.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
