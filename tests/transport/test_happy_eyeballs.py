"""Happy Eyeballs (RFC 8305): ordering and the race, in virtual time."""

import socket

import pytest
import trio
import trio.testing

from hypermesh.transport.happy_eyeballs import ATTEMPT_DELAY, RaceFailed, interleave_families, race

V6_A = (socket.AF_INET6, ("2001:db8::1", 1, 0, 0))
V6_B = (socket.AF_INET6, ("2001:db8::2", 1, 0, 0))
V4_A = (socket.AF_INET, ("192.0.2.1", 1))
V4_B = (socket.AF_INET, ("192.0.2.2", 1))


class Refused(Exception):
    pass


def test_addresses_are_ordered_ipv6_first_alternating_families_without_duplicates():
    assert interleave_families([V4_A, V4_B, V6_A, V4_A, V6_B]) == [V6_A, V4_A, V6_B, V4_B]
    assert interleave_families([V4_A, V4_B]) == [V4_A, V4_B]


class Attempts:
    """Fake connection attempts: each address is dead, live (after a delay) or failing."""

    def __init__(self, behaviour):
        self.behaviour = behaviour
        self.started: dict = {}
        self.cancelled: list = []
        self.discarded: list = []

    async def attempt(self, target):
        self.started[target] = trio.current_time()
        kind, until = self.behaviour[target]
        try:
            await (until.wait() if kind == "gate" else trio.sleep(until))
        except trio.Cancelled:
            self.cancelled.append(target)
            raise
        if kind == "fail":
            raise ConnectionError(f"{target} failed")
        if kind == "refuse":
            raise Refused(f"{target} refused")
        return target

    async def run(self, targets):
        return await race(
            targets,
            self.attempt,
            retryable=lambda exc: isinstance(exc, ConnectionError),
            discard=self.discarded.append,
        )


async def test_dead_ipv6_address_loses_to_a_live_ipv4_one_started_after_the_delay(autojump_clock):
    attempts = Attempts({V6_A: ("live", 60.0), V4_A: ("live", 0.01)})  # IPv6 black-holed
    start = trio.current_time()
    assert await attempts.run(interleave_families([V4_A, V6_A])) == V4_A
    assert attempts.started[V6_A] == start
    assert attempts.started[V4_A] == pytest.approx(start + ATTEMPT_DELAY)
    assert attempts.cancelled == [V6_A]
    assert trio.current_time() - start == pytest.approx(ATTEMPT_DELAY + 0.01)


async def test_a_fast_first_address_means_no_second_attempt(autojump_clock):
    attempts = Attempts({V6_A: ("live", 0.01), V4_A: ("live", 0.01)})
    assert await attempts.run([V6_A, V4_A]) == V6_A
    assert V4_A not in attempts.started


async def test_a_failed_attempt_starts_the_next_one_without_waiting(autojump_clock):
    attempts = Attempts({V6_A: ("fail", 0.01), V4_A: ("live", 0.01)})
    start = trio.current_time()
    assert await attempts.run([V6_A, V4_A]) == V4_A
    assert attempts.started[V4_A] == pytest.approx(start + 0.01)


async def test_a_success_after_the_winner_is_discarded(autojump_clock):
    # Both attempts finish in the same scheduler batch: one wins, the other's
    # result is handed back for closing.
    gate = trio.Event()
    attempts = Attempts({V6_A: ("gate", gate), V4_A: ("gate", gate)})

    async def open_gate_after_both_started():
        await trio.sleep(ATTEMPT_DELAY * 1.5)
        gate.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(open_gate_after_both_started)
        result = await attempts.run([V6_A, V4_A])
    assert attempts.discarded == [{V6_A: V4_A, V4_A: V6_A}[result]]


async def test_every_attempt_failing_reports_each_error(autojump_clock):
    attempts = Attempts({V6_A: ("fail", 0.01), V4_A: ("fail", 0.02)})
    with pytest.raises(RaceFailed) as failed:
        await attempts.run([V6_A, V4_A])
    assert [target for target, _ in failed.value.errors] == [V6_A, V4_A]


async def test_a_non_retryable_error_ends_the_race_at_once(autojump_clock):
    attempts = Attempts({V6_A: ("refuse", 0.01), V4_A: ("live", 60.0), V6_B: ("live", 60.0)})
    with pytest.raises(Refused):
        await attempts.run([V6_A, V4_A, V6_B])
    assert list(attempts.started) == [V6_A]
