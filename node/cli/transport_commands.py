"""``hypermesh ping | id | perf | peers``: talk to one peer, or list connections."""

from __future__ import annotations

import trio

from .. import control
from .common import CommandError, add_command, byte_count, key_value_lines, node_command, positive, show


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
    return show(args, result, _peers_lines)


def register(commands) -> None:
    ping = add_command(commands, "ping", node_command("ping", _ping_lines, addr="maddr", count="count"), "ping a peer")
    ping.add_argument("maddr", help="full multiaddr ending in /p2p/<peer id>")
    ping.add_argument("--count", type=positive, default=3)

    ident = add_command(commands, "id", node_command("id", _identify_lines, addr="maddr"),
                        "show a peer's identify record")
    ident.add_argument("maddr")

    perf = add_command(commands, "perf", node_command("perf", key_value_lines, addr="maddr", upload="upload",
                                                      download="download"),
                       "measure throughput to a peer (/perf/1.0.0)")
    perf.add_argument("maddr")
    perf.add_argument("--upload", type=byte_count, default=0, metavar="BYTES")
    perf.add_argument("--download", type=byte_count, default=0, metavar="BYTES")

    add_command(commands, "peers", lambda args: trio.run(_peers, args), "list the running node's connected peers")
