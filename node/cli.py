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
import sys
from pathlib import Path

import trio

from hypermesh.transport.errors import TransportError
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity, IdentityError, init_identity, key_path, load_identity
from hypermesh.transport.multiaddrs import MultiaddrError

from . import control, operations
from .config import DEFAULT_DATA_DIR
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


async def _on_node(args, command: str, **params):
    """Run an operation on the node of ``--data-dir``: through its control
    socket when it is running, else on a short-lived node with its identity
    (or a throwaway one)."""
    if control.node_is_running(args.data_dir):
        try:
            return await control.call(args.data_dir, command, **params)
        except control.ControlError as exc:
            if "no node is running" not in str(exc):
                raise CommandError(str(exc)) from None
    operation = getattr(operations, {"id": "identify"}.get(command, command))
    async with open_host(_client_identity(args.data_dir)) as host:
        positional = params.pop("addr", None)
        return await (operation(host, positional, **params) if positional is not None else operation(host, **params))


def _show(args, result, lines) -> int:
    if args.json:
        _print_json(result)
    else:
        for line in lines(result):
            print(line)
    return EXIT_OK


def _ping_lines(result):
    yield f"connected to {result['peer_id']} in {result['connect_ms']:.2f} ms"
    for index, rtt in enumerate(result["rtts_ms"], 1):
        yield f"ping {index}: {rtt:.3f} ms"


def _identify_lines(record):
    yield f"peer:      {record['peer_id']}"
    yield f"agent:     {record['agent_version']}"
    yield f"protocol:  {record['protocol_version']}"
    yield "protocols: " + ", ".join(record["protocols"])
    for addr in record["listen_addrs"]:
        yield f"listening: {addr}"
    if record["observed_addr"]:
        yield f"sees us:   {record['observed_addr']}"


def _key_value_lines(result):
    for key, value in result.items():
        yield f"{key}: {value}"


def _peers_lines(result):
    if not result:
        yield "no connected peers"
    for peer in result:
        yield f"{peer['peer_id']}  {' '.join(peer['addrs'])}  {peer['agent_version']}"


async def _ping(args) -> int:
    result = await _on_node(args, "ping", addr=args.maddr, count=args.count)
    return _show(args, result, _ping_lines)


async def _identify(args) -> int:
    result = await _on_node(args, "id", addr=args.maddr)
    return _show(args, result, _identify_lines)


async def _perf(args) -> int:
    result = await _on_node(args, "perf", addr=args.maddr, upload=args.upload, download=args.download)
    return _show(args, result, _key_value_lines)


async def _peers(args) -> int:
    if not control.node_is_running(args.data_dir):
        raise CommandError(f"no node is running in {args.data_dir}: start one with `hypermesh run`")
    try:
        result = await control.call(args.data_dir, "peers")
    except control.ControlError as exc:
        raise CommandError(str(exc)) from None
    return _show(args, result, _peers_lines)


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

    command("peers", lambda args: trio.run(_peers, args), "list the running node's connected peers")

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


if __name__ == "__main__":
    sys.exit(main())
