"""The ``hypermesh`` command line.

Flags and ``--json`` output shapes are a contract scripts rely on: every
command takes ``--data-dir``; with ``--json`` a command prints exactly one
JSON object on stdout (``run`` prints one as its first line); failures print
one ``error: …`` line on stderr and exit non-zero.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import sys
from pathlib import Path

import trio

from hypermesh.transport import identify as identify_protocol
from hypermesh.transport import perf as perf_protocol
from hypermesh.transport import ping as ping_protocol
from hypermesh.transport.errors import TransportError
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity, IdentityError, init_identity, key_path, load_identity
from hypermesh.transport.multiaddrs import MultiaddrError, parse_quic_address

from .config import DEFAULT_DATA_DIR, DEFAULT_LISTEN
from .logs import setup_logging

log = logging.getLogger("hypermesh.node")

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CommandError(Exception):
    """A failure to report as one line, with exit status 1."""


def _print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _client_identity(data_dir: Path) -> Identity:
    """The node's identity when it has one; a throwaway one for a pure client."""
    if key_path(data_dir).exists():
        return load_identity(data_dir)
    return Identity.generate()


def _target(maddr: str):
    address = parse_quic_address(maddr)
    if address.peer_id is None:
        raise CommandError(f"{maddr} lacks /p2p/<peer id>: the peer must be named so that it can be authenticated")
    return address


# -- commands -------------------------------------------------------------------


def cmd_init(args) -> int:
    identity, created = init_identity(args.data_dir)
    if args.json:
        _print_json({"peer_id": str(identity.peer_id), "created": created, "data_dir": str(args.data_dir)})
    else:
        verb = "created" if created else "already exists"
        print(f"identity {verb} in {args.data_dir}")
        print(identity.peer_id)
    return EXIT_OK


async def _run_node(args) -> int:
    from .node import run_node

    return await run_node(args)


def cmd_run(args) -> int:
    return trio.run(_run_node, args)


async def _ping(args) -> int:
    address = _target(args.maddr)
    identity = _client_identity(args.data_dir)
    async with open_host(identity) as host:
        started = trio.current_time()
        await host.connect(address)
        connect_ms = (trio.current_time() - started) * 1000
        rtts = await ping_protocol.ping(host, address.peer_id, args.count)
    rtts_ms = [round(rtt * 1000, 3) for rtt in rtts]
    if args.json:
        _print_json({"peer_id": str(address.peer_id), "connect_ms": round(connect_ms, 3), "rtts_ms": rtts_ms})
    else:
        print(f"connected to {address.peer_id} in {connect_ms:.2f} ms")
        for index, rtt in enumerate(rtts_ms, 1):
            print(f"ping {index}: {rtt:.3f} ms")
    return EXIT_OK


async def _identify(args) -> int:
    address = _target(args.maddr)
    async with open_host(_client_identity(args.data_dir)) as host:
        driver = await host.connect(address)
        record = await identify_protocol.identify(host, driver)
    if args.json:
        _print_json(record.to_json())
    else:
        print(f"peer:      {record.peer_id}")
        print(f"agent:     {record.agent_version}")
        print(f"protocol:  {record.protocol_version}")
        print("protocols: " + ", ".join(record.protocols))
        for addr in record.listen_addrs:
            print(f"listening: {addr}")
        if record.observed_addr:
            print(f"sees us:   {record.observed_addr}")
    return EXIT_OK


async def _perf(args) -> int:
    address = _target(args.maddr)
    async with open_host(_client_identity(args.data_dir)) as host:
        await host.connect(address)
        stream = await host.new_stream(address.peer_id, [perf_protocol.PROTOCOL])
        result = await perf_protocol.run_perf(stream, args.upload, args.download)
    report = {"peer_id": str(address.peer_id), **result.to_json()}
    if args.json:
        _print_json(report)
    else:
        for key, value in report.items():
            print(f"{key}: {value}")
    return EXIT_OK


def _byte_count(text: str) -> int:
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


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


# -- parser ---------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hypermesh", description="HyperMesh peer-to-peer mesh node")
    parser.add_argument("--log-level", default="warning", help="debug, info, warning or error")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line (stderr)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="node directory (default ~/.hypermesh)")
        sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        sub.set_defaults(handler=handler)
        return sub

    command("init", cmd_init, "create the node identity and print its peer ID")

    run = command("run", cmd_run, "run a node until SIGINT or SIGTERM")
    run.add_argument("--listen", action="append", metavar="MADDR", help="listen address (repeatable)")
    run.add_argument("--bootstrap", action="append", default=[], metavar="MADDR", help="peer to connect to at start")
    run.add_argument("--metrics", metavar="ADDR", help="serve Prometheus metrics on HOST:PORT")

    ping = command("ping", lambda args: trio.run(_ping, args), "ping a peer")
    ping.add_argument("maddr", help="full multiaddr ending in /p2p/<peer id>")
    ping.add_argument("--count", type=_positive, default=3)

    ident = command("id", lambda args: trio.run(_identify, args), "show a peer's identify record")
    ident.add_argument("maddr")

    perf = command("perf", lambda args: trio.run(_perf, args), "measure throughput to a peer (/perf/1.0.0)")
    perf.add_argument("maddr")
    perf.add_argument("--upload", type=_byte_count, default=0, metavar="BYTES")
    perf.add_argument("--download", type=_byte_count, default=0, metavar="BYTES")

    for extension in _extensions():
        extension(commands, command)
    return parser


def _extensions():
    """Command groups contributed by the upper layers."""
    found = []
    try:
        from hypermesh.capsules import cli as capsule_cli

        if hasattr(capsule_cli, "register"):
            found.append(lambda commands, command: capsule_cli.register(commands))
    except ImportError:
        pass
    return found


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_json)
    if hasattr(args, "data_dir") and args.data_dir is not None:
        args.data_dir = Path(args.data_dir).expanduser()
    try:
        return args.handler(args) or EXIT_OK
    except KeyboardInterrupt:
        return 130
    except (CommandError, TransportError, IdentityError, MultiaddrError, trio.TooSlowError, OSError) as exc:
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


if __name__ == "__main__":
    sys.exit(main())
