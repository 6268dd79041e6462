"""``hypermesh init`` and ``hypermesh run``: create a node and run it."""

from __future__ import annotations

import trio

from hypermesh.transport.connmgr import ConnectionManagerConfig
from hypermesh.transport.identity import init_identity

from .common import EXIT_OK, CommandError, add_command, positive, print_json


def cmd_init(args) -> int:
    identity, created = init_identity(args.data_dir)
    if args.json:
        print_json({"peer_id": str(identity.peer_id), "created": created, "data_dir": str(args.data_dir)})
    else:
        verb = "created" if created else "already exists"
        print(f"identity {verb} in {args.data_dir}")
        print(identity.peer_id)
    return EXIT_OK


async def _run_node(args) -> int:
    from ..node import run_node

    return await run_node(args)


def cmd_run(args) -> int:
    from ..runtime import tune_garbage_collector

    try:
        args.connection_limits = ConnectionManagerConfig(low_water=args.connections_low,
                                                         high_water=args.connections_high)
    except ValueError:
        raise CommandError("--connections-low must not exceed --connections-high") from None
    tune_garbage_collector()
    return trio.run(_run_node, args)


def register(commands) -> None:
    add_command(commands, "init", cmd_init, "create the node identity and print its peer ID")

    run = add_command(commands, "run", cmd_run, "run a node until SIGINT or SIGTERM")
    run.add_argument("--listen", action="append", metavar="MADDR", help="listen address (repeatable)")
    run.add_argument("--bootstrap", action="append", default=[], metavar="MADDR", help="peer to connect to at start")
    run.add_argument("--metrics", metavar="ADDR", help="serve Prometheus metrics on HOST:PORT")
    run.add_argument("--perf", action="store_true", help="serve /perf/1.0.0 (throughput tests) to peers")
    limits = ConnectionManagerConfig()
    run.add_argument("--connections-high", type=positive, default=limits.high_water, metavar="N",
                     help=f"above N open connections, close idle ones (default {limits.high_water})")
    run.add_argument("--connections-low", type=positive, default=limits.low_water, metavar="N",
                     help=f"... until N remain (default {limits.low_water})")
