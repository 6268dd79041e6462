"""Operations a node performs for its user, shared by the control socket and
by the short-lived node a CLI command starts when none is running.

Each takes a running host and JSON-friendly arguments and returns the JSON
object the CLI prints.
"""

from __future__ import annotations

import trio

from hypermesh.transport import identify as identify_protocol
from hypermesh.transport import perf as perf_protocol
from hypermesh.transport import ping as ping_protocol
from hypermesh.transport.multiaddrs import MultiaddrError, parse_quic_address


def _target(maddr: str):
    address = parse_quic_address(maddr)
    if address.peer_id is None:
        raise MultiaddrError(f"{maddr} lacks /p2p/<peer id>: the peer must be named so that it can be authenticated")
    return address


async def ping(host, maddr: str, count: int = 3) -> dict:
    address = _target(maddr)
    started = trio.current_time()
    await host.connect(address)
    connect_ms = (trio.current_time() - started) * 1000
    rtts = await ping_protocol.ping(host, address.peer_id, count)
    return {
        "peer_id": str(address.peer_id),
        "connect_ms": round(connect_ms, 3),
        "rtts_ms": [round(rtt * 1000, 3) for rtt in rtts],
    }


async def identify(host, maddr: str) -> dict:
    address = _target(maddr)
    driver = await host.connect(address)
    record = await identify_protocol.identify(host, driver)
    return record.to_json()


async def perf(host, maddr: str, upload: int, download: int) -> dict:
    address = _target(maddr)
    await host.connect(address)
    stream = await host.new_stream(address.peer_id, [perf_protocol.PROTOCOL])
    result = await perf_protocol.run_perf(stream, upload, download)
    return {"peer_id": str(address.peer_id), **result.to_json()}


def peers(host) -> list[dict]:
    return [
        {
            "peer_id": str(peer_id),
            "addrs": [driver.remote_multiaddr for driver in host.connections_to(peer_id)],
            "agent_version": host.peerstore.agent_version(peer_id),
            "protocols": sorted(host.peerstore.protocols(peer_id)),
        }
        for peer_id in host.connected_peers()
    ]


def register_all(control, host) -> None:
    """Expose the operations on the control socket."""

    async def do_ping(request):
        return await ping(host, request["addr"], int(request.get("count", 3)))

    async def do_identify(request):
        return await identify(host, request["addr"])

    async def do_perf(request):
        return await perf(host, request["addr"], int(request.get("upload", 0)), int(request.get("download", 0)))

    async def do_peers(request):
        return peers(host)

    async def do_info(request):
        return {"peer_id": str(host.peer_id), "addrs": host.listen_addrs()}

    control.register("ping", do_ping)
    control.register("id", do_identify)
    control.register("perf", do_perf)
    control.register("peers", do_peers)
    control.register("info", do_info)
