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

from hypermesh.transport.connmgr import ConnectionManagerConfig
from hypermesh.transport.errors import TransportError
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity, IdentityError, init_identity, key_path, load_identity
from hypermesh.transport.multiaddrs import MultiaddrError

from hypermesh.capsules import cli as capsule_cli
from hypermesh.dht.kademlia import Mode

from . import control, operations
from .config import DEFAULT_DATA_DIR

# A short-lived node (a CLI command with no running node) listens only so
# that the peers it asks can answer it.
SHORT_LIVED_LISTEN = ["/ip6/::/udp/0/quic-v1", "/ip4/0.0.0.0/udp/0/quic-v1"]
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
    from .runtime import tune_garbage_collector

    try:
        args.connection_limits = ConnectionManagerConfig(low_water=args.connections_low,
                                                         high_water=args.connections_high)
    except ValueError:
        raise CommandError("--connections-low must not exceed --connections-high") from None
    tune_garbage_collector()
    return trio.run(_run_node, args)


async def _on_node(args, command: str, on_progress=None, **params):
    """Run an operation on the node of ``--data-dir``: through its control
    socket when it is running, else on a short-lived node with its identity
    (a throwaway one for transport-only commands on an uninitialised dir)."""
    if control.node_is_running(args.data_dir):
        try:
            return await control.call(args.data_dir, command, on_progress=on_progress, **params)
        except control.ControlError as exc:
            if "no node is running" not in str(exc):
                raise CommandError(str(exc)) from None
    operation = operations.OPERATIONS[command]
    if command in operations.TRANSPORT_ONLY:
        async with open_host(_client_identity(args.data_dir)) as host:
            return await operation(_HostOnly(host), **params)
    bootstrap = getattr(args, "bootstrap", None) or []
    if not bootstrap:
        raise CommandError(
            f"no node is running in {args.data_dir}: start one with `hypermesh run`, or give --bootstrap MADDR"
        )
    from .node import open_node

    identity, _ = init_identity(args.data_dir)
    async with open_node(identity, args.data_dir, SHORT_LIVED_LISTEN, bootstrap, dht_mode=Mode.CLIENT) as node:
        for addr in bootstrap:
            await node.host.connect(addr)
        await node.discovery.service.bootstrap()
        if on_progress is not None:
            params["progress"] = on_progress
        return await operation(node, **params)


class _HostOnly:
    def __init__(self, host):
        self.host = host


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


async def _peers(args) -> int:
    if not control.node_is_running(args.data_dir):
        raise CommandError(f"no node is running in {args.data_dir}: start one with `hypermesh run`")
    try:
        result = await control.call(args.data_dir, "peers")
    except control.ControlError as exc:
        raise CommandError(str(exc)) from None
    return _show(args, result, _peers_lines)


def _providers_lines(result):
    yield f"{result['cid']}: {len(result['providers'])} provider(s)"
    for provider in result["providers"]:
        yield f"  {provider['peer_id']}  {' '.join(provider['addrs'])}"


def _instances_lines(result):
    if not result["instances"]:
        yield f"no instances of {result['name']}"
    for instance in result["instances"]:
        yield f"{instance['peer_id']}  {instance['protocol']}  weight {instance['weight']}  {' '.join(instance['addrs'])}"


def _node_command(command: str, lines, progress_bar: bool = False, **fixed):
    """A CLI handler running ``command`` on the node, with arguments from args."""

    def handler(args) -> int:
        params = {name: getattr(args, attribute) for name, attribute in fixed.items()}
        bar = ProgressBar(sys.stderr) if progress_bar and not args.json and sys.stderr.isatty() else None

        async def run():
            return await _on_node(args, command, on_progress=bar.update if bar else None, **params)

        try:
            result = trio.run(run)
        finally:
            if bar is not None:
                bar.finish()
        return _show(args, result, lines)

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
    limits = ConnectionManagerConfig()
    run.add_argument("--connections-high", type=_positive, default=limits.high_water, metavar="N",
                     help=f"above N open connections, close idle ones (default {limits.high_water})")
    run.add_argument("--connections-low", type=_positive, default=limits.low_water, metavar="N",
                     help=f"... until N remain (default {limits.low_water})")

    ping = command("ping", _node_command("ping", _ping_lines, addr="maddr", count="count"), "ping a peer")
    ping.add_argument("maddr", help="full multiaddr ending in /p2p/<peer id>")
    ping.add_argument("--count", type=_positive, default=3)

    ident = command("id", _node_command("id", _identify_lines, addr="maddr"), "show a peer's identify record")
    ident.add_argument("maddr")

    perf = command("perf", _node_command("perf", _key_value_lines, addr="maddr", upload="upload", download="download"),
                   "measure throughput to a peer (/perf/1.0.0)")
    perf.add_argument("maddr")
    perf.add_argument("--upload", type=_byte_count, default=0, metavar="BYTES")
    perf.add_argument("--download", type=_byte_count, default=0, metavar="BYTES")

    command("peers", lambda args: trio.run(_peers, args), "list the running node's connected peers")

    def with_bootstrap(sub):
        sub.add_argument("--bootstrap", action="append", default=[], metavar="MADDR",
                         help="when no node runs in --data-dir: peer to join for this command")
        return sub

    dht = commands.add_parser("dht", help="provider records in the DHT").add_subparsers(
        dest="dht_command", required=True, metavar="COMMAND")
    wait = _sub(dht, "wait", _node_command("dht.wait", _key_value_lines, peers="peers", timeout="timeout"),
                "wait until the running node's routing table holds --peers peers")
    wait.add_argument("--peers", type=_positive, default=1)
    wait.add_argument("--timeout", type=float, default=10.0)
    provide = with_bootstrap(_sub(dht, "provide", _node_command("dht.provide", _key_value_lines, key="key"),
                                  "announce this node as a provider of KEY (a CID, or any string)"))
    provide.add_argument("key")
    find = with_bootstrap(_sub(dht, "find-providers", _node_command("dht.find_providers", _providers_lines, key="key"),
                               "find the providers of KEY"))
    find.add_argument("key")

    service = commands.add_parser("service", help="named services in the DHT").add_subparsers(
        dest="service_command", required=True, metavar="COMMAND")
    register = with_bootstrap(_sub(service, "register", _node_command(
        "service.register", _key_value_lines, name="name", protocol="protocol", weight="weight"),
        "announce that this node offers service NAME"))
    register.add_argument("name")
    register.add_argument("--protocol", required=True, help="protocol ID clients should open")
    register.add_argument("--weight", type=int, default=100)
    resolve = with_bootstrap(_sub(service, "resolve", _node_command("service.resolve", _instances_lines, name="name"),
                                  "find the instances of service NAME"))
    resolve.add_argument("name")

    capsule_commands = capsule_cli.register(commands).commands
    publish = with_bootstrap(_sub(capsule_commands, "publish", _node_command(
        "capsule.publish", _key_value_lines, directory="dir"), "announce a signed capsule to the mesh"))
    publish.add_argument("dir")
    fetch = with_bootstrap(_sub(capsule_commands, "fetch", _node_command(
        "capsule.fetch", _key_value_lines, progress_bar=True, cid="cid"),
        "fetch a capsule by CID from its providers, verify and install it"))
    fetch.add_argument("cid")
    return parser


def _sub(group, name: str, handler, help_text: str) -> argparse.ArgumentParser:
    sub = group.add_parser(name, help=help_text, description=help_text)
    sub.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help="node directory (default ~/.hypermesh)")
    sub.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    sub.set_defaults(handler=handler)
    return sub


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
