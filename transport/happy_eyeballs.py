"""Racing connection attempts to one peer's addresses (Happy Eyeballs, RFC 8305).

Addresses are ordered IPv6 first, alternating families (§4). The first
attempt starts at once; each further one starts when the one before it
failed or ``delay`` after it started, whichever is sooner (§5). The first
attempt to succeed wins and every other is cancelled; a result that arrives
after the winner is handed to ``discard``.
"""

from __future__ import annotations

import socket
from typing import Awaitable, Callable, Sequence, TypeVar

import trio

Candidate = TypeVar("Candidate")
Result = TypeVar("Result")

# RFC 8305 §5 "Connection Attempt Delay": recommended 250 ms, at least 100 ms.
ATTEMPT_DELAY = 0.25


def interleave_families(targets: Sequence[tuple[int, tuple]]) -> list[tuple[int, tuple]]:
    """``(family, sockaddr)`` pairs, duplicates dropped, IPv6 first and the families alternating."""
    unique = list(dict.fromkeys(targets))
    ipv6 = [target for target in unique if target[0] == socket.AF_INET6]
    others = [target for target in unique if target[0] != socket.AF_INET6]
    ordered = []
    for index in range(max(len(ipv6), len(others))):
        ordered.extend(family[index] for family in (ipv6, others) if index < len(family))
    return ordered


class RaceFailed(Exception):
    """Every attempt failed with a retryable error; ``errors`` pairs each candidate with its error."""

    def __init__(self, errors: list[tuple[object, Exception]]) -> None:
        super().__init__("; ".join(f"{candidate}: {error}" for candidate, error in errors))
        self.errors = errors


async def race(
    candidates: Sequence[Candidate],
    attempt: Callable[[Candidate], Awaitable[Result]],
    *,
    retryable: Callable[[Exception], bool],
    discard: Callable[[Result], None],
    delay: float = ATTEMPT_DELAY,
) -> Result:
    """The first successful ``attempt``; any non-retryable error ends the race and is raised."""
    if len(candidates) == 1:
        # Nothing to race: spare the nursery and its task.
        try:
            return await attempt(candidates[0])
        except Exception as exc:
            if retryable(exc):
                raise RaceFailed([(candidates[0], exc)]) from None
            raise
    winners: list[Result] = []
    errors: list[tuple[Candidate, Exception]] = []
    fatal: list[Exception] = []

    async def run(candidate: Candidate, failed: trio.Event, nursery: trio.Nursery) -> None:
        try:
            result = await attempt(candidate)
        except Exception as exc:
            if retryable(exc):
                errors.append((candidate, exc))
                failed.set()
            else:
                fatal.append(exc)
                nursery.cancel_scope.cancel()
            return
        if winners or fatal:
            discard(result)
            return
        winners.append(result)
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        for candidate in candidates:
            failed = trio.Event()
            nursery.start_soon(run, candidate, failed, nursery)
            with trio.move_on_after(delay):
                await failed.wait()
    if fatal:
        raise fatal[0]
    if winners:
        return winners[0]
    raise RaceFailed(errors)
