"""``hypermesh ping | id | perf | peers``: talk to one peer, or list connections."""

from __future__ import annotations

import trio

from .. import control
from ..operations import DIAL_TIMEOUT
from .common import (
    CommandError, add_command, byte_count, key_value_lines, no_running_node, node_command, positive, seconds, show,
)

PEER_ADDR_HELP = "the peer's full multiaddr, ending in /p2p/<peer id>"


def _ping_lines(result):
    if result["new_connection"]:
        yield f"connected to {result['addr']} in {result['connect_ms']:.2f} ms"
    else:
        yield f"used the open connection to {result['addr']}"
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
    if not result["peers"]:
        yield "no connected peers"
    for peer in result["peers"]:
        yield f"{peer['peer_id']}  {' '.join(peer['addrs'])}  {peer['agent_version']}"


async def _ask_running_node(args, command: str):
    if not control.node_is_running(args.data_dir):
        raise no_running_node(args)
    try:
        return await control.call(args.data_dir, command)
    except control.ControlError as exc:
        raise CommandError(str(exc)) from None


async def _peers(args) -> int:
    return show(args, {"peers": await _ask_running_node(args, "peers")}, _peers_lines)


async def _info(args) -> int:
    # One full multiaddr a line, so that a shell can take one: $(hypermesh info | head -n 1)
    return show(args, await _ask_running_node(args, "info"), lambda info: info["addrs"])


def _add_timeout_option(sub) -> None:
    sub.add_argument("--timeout", type=seconds(0.1, 600), default=DIAL_TIMEOUT, metavar="SECONDS",
                     help=f"give up on a peer that does not answer the dial after this long (default {DIAL_TIMEOUT:g})")


def register(commands) -> None:
    ping = add_command(commands, "ping", node_command("ping", _ping_lines, addr="maddr", count="count",
                                                      timeout="timeout"),
                       "ping a peer: connect (or use the open connection to it), then measure round trips")
    ping.add_argument("maddr", help=PEER_ADDR_HELP)
    ping.add_argument("--count", type=positive, default=3, metavar="N", help="round trips to measure (default 3)")
    _add_timeout_option(ping)

    ident = add_command(commands, "id", node_command("id", _identify_lines, addr="maddr", timeout="timeout"),
                        "show a peer's identify record (agent, protocols, addresses)")
    ident.add_argument("maddr", help=PEER_ADDR_HELP)
    _add_timeout_option(ident)

    perf = add_command(commands, "perf", node_command("perf", key_value_lines, addr="maddr", upload="upload",
                                                      download="download", timeout="timeout"),
                       "measure throughput to a peer (/perf/1.0.0)")
    perf.add_argument("maddr", help=PEER_ADDR_HELP)
    perf.add_argument("--upload", type=byte_count, default=0, metavar="BYTES",
                      help="bytes to send, like 512, 64k, 100M, 1G (default 0)")
    perf.add_argument("--download", type=byte_count, default=0, metavar="BYTES",
                      help="bytes to receive, like 512, 64k, 100M, 1G (default 0)")
    _add_timeout_option(perf)

    add_command(commands, "info", lambda args: trio.run(_info, args),
                "print the running node's full multiaddrs, one a line (--json: {\"peer_id\", \"addrs\"})")
    add_command(commands, "peers", lambda args: trio.run(_peers, args),
                "list the running node's connected peers (--json: {\"peers\": [...]})")
