"""Cancelled uploads must not leak connection credit (issue 10, defect 1).

    .venv/bin/python bench/hostile/cancelled_uploads.py [--maddr MADDR] [--quick]

Uploads 1 MiB, 100 times (10 with --quick), each on a new stream to a
handler that reads none of it (identify writes its record and closes), and
gives up on each; then pings and uploads 4 MiB with perf on the same
connection. Before the fix the connection's 8 MiB of credit ran out after
about a dozen and the rest stalled while the connection stayed open.
"""

from __future__ import annotations

import sys

import trio

from common import MIB, parse_args, report, target_node

from hypermesh.transport import identify, perf, ping
from hypermesh.transport.errors import StreamReset, TransportError
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity
from hypermesh.transport.multiaddrs import parse_quic_address

STEP = 10.0


async def cancelled_upload(client, driver) -> None:
    stream = await client.open_stream_on(driver, [identify.PROTOCOL])
    try:
        await stream.send_all(bytes(MIB))
        while await stream.receive_some():
            pass
    except StreamReset:
        pass
    await stream.reset()


async def attack(addr: str, count: int) -> dict:
    peer = parse_quic_address(addr).peer_id
    result = {"cancelled_uploads": count}
    async with open_host(Identity.generate()) as client:
        driver = await client.connect(addr)
        try:
            with trio.fail_after(STEP + count):
                for _ in range(count):
                    await cancelled_upload(client, driver)
            with trio.fail_after(STEP):
                result["ping_ms"] = [round(rtt * 1000, 3) for rtt in await ping.ping(client, peer, count=3)]
                stream = await client.open_stream_on(driver, [perf.PROTOCOL])
                upload = await perf.run_perf(stream, 4 * MIB, 0)
                result["upload_4mib_mb_per_s"] = upload.to_json()["upload_mb_per_s"]
        except (trio.TooSlowError, TransportError) as exc:
            result["error"] = str(exc) or type(exc).__name__
        result["same_connection"] = client.connections_to(peer) == [driver]
    return result


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    with target_node(args) as (addr, _pid):
        result = trio.run(attack, addr, 10 if args.quick else 100)
    return report(result, "error" not in result and result["same_connection"])


if __name__ == "__main__":
    sys.exit(main())
