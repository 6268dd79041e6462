"""A peer that never reads must not pin the node's memory (issue 10, defect 2).

    .venv/bin/python bench/hostile/unread_perf.py [--maddr MADDR --pid PID] [--quick]

Opens 100 perf streams (20 with --quick) asking for 1 GiB each and reads
none of it, waits for the node to fill what it may, and reports the node's
resident memory before and after (known when the script starts the node, or
given --pid), how many requests it refused (perf serves a peer at most 8 at
once) and `hypermesh ping` from another process meanwhile. Passes if the node pinned at most
16 MiB and kept serving. Before the fix 100 such streams pinned 200 MiB.
"""

from __future__ import annotations

import sys

import trio

from common import parse_args, ping_from_another_process, report, rss_mib, target_node

from hypermesh.transport import perf
from hypermesh.transport.errors import StreamReset, TransportError
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity

DOWNLOAD = 1 << 30
# How long the node gets to fill its buffers before its memory is read.
SETTLE_SECONDS = 3.0
PINNED_LIMIT_MIB = 16


async def unread_download(client, driver):
    stream = await client.open_stream_on(driver, [perf.PROTOCOL])
    await stream.send_all(DOWNLOAD.to_bytes(8, "big"))
    await stream.send_eof()
    return stream


async def refused(stream) -> bool:
    """Whether the node reset the stream (reads at most one byte to find out)."""
    with trio.move_on_after(0.05):
        try:
            await stream.receive_some(1)
        except StreamReset:
            return True
    return False


async def attack(addr: str, pid: int | None, count: int) -> dict:
    result = {"unread_streams": count, "rss_before_mib": rss_mib(pid)}
    async with open_host(Identity.generate()) as client:
        try:
            with trio.fail_after(60):
                driver = await client.connect(addr)
                streams = [await unread_download(client, driver) for _ in range(count)]
                await trio.sleep(SETTLE_SECONDS)
                result["rss_after_mib"] = rss_mib(pid)
                result["refused"] = sum([await refused(stream) for stream in streams])
                result["bystander_ping_ms"] = await ping_from_another_process(addr)
        except (trio.TooSlowError, TransportError) as exc:
            result["error"] = str(exc) or type(exc).__name__
    if result["rss_before_mib"] is not None and result.get("rss_after_mib") is not None:
        result["pinned_mib"] = round(result["rss_after_mib"] - result["rss_before_mib"], 1)
    return result


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    with target_node(args) as (addr, pid):
        result = trio.run(attack, addr, pid, 20 if args.quick else 100)
    passed = "error" not in result and result["bystander_ping_ms"] and result.get("pinned_mib", 0) <= PINNED_LIMIT_MIB
    return report(result, bool(passed))


if __name__ == "__main__":
    sys.exit(main())
