"""``hypermesh init`` and ``hypermesh run``: create a node and run it."""

from __future__ import annotations

import trio

from hypermesh.transport.connmgr import ConnectionManagerConfig
from hypermesh.transport.identity import init_identity

from pathlib import Path

from ..chain import ChainSetupError, chain_options
from ..config import CONFIG_FILE, config_template
from .common import EXIT_OK, CommandError, add_command, add_setting_option, print_json


def cmd_init(args) -> int:
    identity, created = init_identity(args.data_dir)
    config_path = args.data_dir / CONFIG_FILE
    if not config_path.exists():  # never overwrite the runner's own settings
        config_path.write_text(config_template(), encoding="utf-8")
    if args.json:
        print_json({"peer_id": str(identity.peer_id), "created": created, "data_dir": str(args.data_dir),
                    "config": str(config_path)})
    else:
        verb = "created" if created else "already exists"
        print(f"identity {verb} in {args.data_dir}; settings in {config_path}")
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
    except ValueError as exc:
        raise CommandError(f"connection limits: {exc}") from None
    try:
        args.chain = chain_options(_genesis_path(args), args.validator, args.state_sync, args.chain_timeout,
                                   args.snapshot_interval, args.data_dir)
    except ChainSetupError as exc:
        raise CommandError(str(exc)) from None
    tune_garbage_collector()
    return trio.run(_run_node, args)


def _genesis_path(args) -> Path | None:
    """The genesis file: as given, or, when config.toml names it by a relative path, in the data directory."""
    if args.genesis is None:
        return None
    path = Path(args.genesis).expanduser()
    if not path.is_absolute() and args.config.sources["genesis"].startswith("file"):
        return args.data_dir / path
    return path


def register(commands) -> None:
    add_command(commands, "init", cmd_init,
                "create the node identity and a commented config.toml, and print the peer ID")

    run = add_command(commands, "run", cmd_run, "run a node until SIGINT or SIGTERM")
    add_setting_option(run, "network.listen", "MADDR", "listen address, repeatable; port 0 picks a free port")
    add_setting_option(run, "network.bootstrap", "MADDR",
                       "peer to join the mesh through, ending in /p2p/<peer id> (repeatable)")
    add_setting_option(run, "metrics.address", "HOST:PORT", "serve Prometheus metrics there, e.g. [::1]:9100")
    add_setting_option(run, "network.connections_high", "N", "above N open connections, close idle ones")
    add_setting_option(run, "network.connections_low", "N", "closing idle connections stops when N remain")
    add_setting_option(run, "dht.mode", "MODE",
                       "server: answer DHT queries (reachable nodes); client: only ask (behind NAT)")
    add_setting_option(run, "dht.disjoint_paths", "D",
                       "S/Kademlia disjoint paths per lookup: 1 is off, 3 resists eclipse attacks "
                       "at about 3x the messages")
    add_setting_option(run, "capsules.trust", "PEER_ID",
                       "accept capsules signed by this peer (tenant, session, ephemeral zones; repeatable)")
    add_setting_option(run, "network.perf", "", "serve /perf/1.0.0 (throughput tests) to peers")
    add_setting_option(run, "capsules.remote_max_input_bytes", "BYTES",
                       "largest input a peer may send to run a capsule here")
    add_setting_option(run, "capsules.remote_per_peer_running", "N", "capsule calls one peer may run here at once")
    add_setting_option(run, "capsules.remote_per_peer_queued", "N", "capsule calls one peer may queue beyond those")
    add_setting_option(run, "capsules.remote_total_running", "N", "peers' capsule calls running at once in all")
    add_setting_option(run, "chain.genesis", "FILE", "run the chain of this genesis file (hypermesh genesis new)")
    add_setting_option(run, "chain.validator", "",
                       "sign blocks with the node's key whenever the ledger makes it a validator "
                       "(without: follow the chain and answer queries)")
    add_setting_option(run, "chain.state_sync", "",
                       "with no chain data yet, start from a validator's certified snapshot, not from genesis")
    add_setting_option(run, "chain.timeout", "SECONDS",
                       "how long a validator waits for a round's proposal (votes wait half); how often it re-sends")
    add_setting_option(run, "chain.snapshot_interval", "BLOCKS",
                       "keep a state snapshot every BLOCKS blocks for nodes that join by state sync")
