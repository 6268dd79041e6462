"""A peer opening 10,000 streams is paced by QUIC, not reset (issue 10, defect 4).

    .venv/bin/python bench/hostile/many_streams.py [--maddr MADDR] [--quick]

One client lifts its own stream bound and runs 10,000 ping exchanges (1,000
with --quick), each on its own stream, up to 2,000 streams open at once
against the node's 256; meanwhile `hypermesh ping`, in its own process,
pings the node again and again. Passes if
every exchange completes (none reset) and the second peer is answered.
"""

from __future__ import annotations

import sys
import time

import trio

from common import parse_args, ping_from_another_process, report, target_node

from hypermesh.transport import ping
from hypermesh.transport.errors import TransportError
from hypermesh.transport.host import HostConfig, open_host
from hypermesh.transport.identity import Identity

IN_FLIGHT = 2_000


async def exchange(client, driver) -> None:
    pinger = ping.Pinger(await client.open_stream_on(driver, [ping.PROTOCOL]))
    await pinger.ping()
    await pinger.aclose()


async def attack(addr: str, count: int) -> dict:
    greedy = HostConfig(max_streams_per_connection=2 * count)
    outcome = {"completed": 0, "failed": 0}
    bystander_ms: list[float] = []
    async with open_host(Identity.generate(), config=greedy) as client:
        driver = await client.connect(addr)
        in_flight = trio.Semaphore(IN_FLIGHT)
        started = time.monotonic()

        async def one() -> None:
            async with in_flight:
                try:
                    await exchange(client, driver)
                    outcome["completed"] += 1
                except TransportError:
                    outcome["failed"] += 1

        async def bystander_pings() -> None:
            while outcome["completed"] + outcome["failed"] < count:
                bystander_ms.extend(await ping_from_another_process(addr))

        with trio.move_on_after(600):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(bystander_pings)
                for _ in range(count):
                    nursery.start_soon(one)
    return {
        "streams": count,
        **outcome,
        "seconds": round(time.monotonic() - started, 2),
        "bystander_pings": len(bystander_ms),
        "bystander_ping_ms_max": max(bystander_ms, default=None),
    }


def main() -> int:
    args = parse_args(__doc__.splitlines()[0])
    with target_node(args) as (addr, _pid):
        result = trio.run(attack, addr, 1_000 if args.quick else 10_000)
    return report(result, result["completed"] == result["streams"] and result["bystander_pings"] > 0)


if __name__ == "__main__":
    sys.exit(main())
