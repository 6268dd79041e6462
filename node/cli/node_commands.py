"""``hypermesh init`` and ``hypermesh run``: create a node and run it."""

from __future__ import annotations

import trio

from hypermesh.dht.kademlia import Mode
from hypermesh.transport.connmgr import ConnectionManagerConfig
from hypermesh.transport.identity import init_identity

from .common import EXIT_OK, CommandError, add_command, host_port, positive, print_json


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
    run.add_argument("--listen", action="append", metavar="MADDR",
                     help="listen address, repeatable; port 0 picks a free port "
                          "(default /ip6/::/udp/4001/quic-v1 and /ip4/0.0.0.0/udp/4001/quic-v1)")
    run.add_argument("--bootstrap", action="append", default=[], metavar="MADDR",
                     help="peer to join the mesh through, ending in /p2p/<peer id> (repeatable)")
    run.add_argument("--metrics", type=host_port, metavar="HOST:PORT", help="serve Prometheus metrics there, e.g. [::1]:9100 (default off)")
    limits = ConnectionManagerConfig()
    run.add_argument("--connections-high", type=positive, default=limits.high_water, metavar="N",
                     help=f"above N open connections, close idle ones (default {limits.high_water})")
    run.add_argument("--connections-low", type=positive, default=limits.low_water, metavar="N",
                     help=f"closing idle connections stops when N remain (default {limits.low_water})")
    run.add_argument("--dht-mode", choices=[mode.value for mode in Mode], default=Mode.SERVER.value,
                     help="server: answer DHT queries (reachable nodes); client: only ask (behind NAT) "
                          "(default server)")
    run.add_argument("--dht-disjoint-paths", type=positive, default=1, metavar="D",
                     help="S/Kademlia disjoint paths per lookup: 1 is off, 3 resists eclipse attacks "
                          "at about 3x the messages (default 1)")
