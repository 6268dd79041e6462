"""Remote execution over /hm/capsule-run/1.0.0 between real QUIC hosts: runs, typed refusals, per-peer limits."""

from __future__ import annotations

import collections

import pytest
import trio

from capsule_testkit import LIMITS_WAT, STRANGER, manifest, write_capsule
from mesh_testkit import STEP, find_providers, open_mesh
from hypermesh.capsules.execution import verify_execution_receipt
from hypermesh.capsules.remote import RemoteRunLimits, ReceiptMismatch, check_receipt, run_remote
from hypermesh.capsules.run_wire import RemoteRunRefused, RunOutcome, RunRequest
from hypermesh.transport.errors import TransportError

FLOOD = 1000


async def publish(node, directory) -> str:
    with trio.fail_after(STEP):
        return await node.distribution.publish(directory)


async def test_a_peer_runs_a_published_capsule_and_gets_output_and_a_receipt(tmp_path, engine):
    source = write_capsule(tmp_path / "src", manifest(), LIMITS_WAT)
    async with open_mesh(tmp_path, engine, 2) as (a, b):
        cid = await publish(a, source)
        with trio.fail_after(STEP):
            outcome = await run_remote(b.host, a.peer_id, cid, "echo", b"on a, for b")
        assert outcome.output == b"on a, for b"
        assert outcome.receipt["node"] == str(a.peer_id) and outcome.receipt["capsule"] == cid
        assert verify_execution_receipt(outcome.receipt)
        assert a.remote_runs.counters["ran"] == 1


async def test_a_node_fetches_an_absent_capsule_through_the_dht_once_before_running_it(tmp_path, engine):
    source = write_capsule(tmp_path / "src", manifest(), LIMITS_WAT)
    async with open_mesh(tmp_path, engine, 3) as (a, b, c):
        cid = await publish(c, source)
        outputs = []

        async def ask(index: int) -> None:
            outputs.append((await run_remote(b.host, a.peer_id, cid, "echo", b"fetched first %d" % index)).output)

        with trio.fail_after(STEP):
            await find_providers(a, cid, {c.peer_id})
            async with trio.open_nursery() as nursery:  # concurrent first requests: one fetch
                for index in range(5):
                    nursery.start_soon(ask, index)
        assert sorted(outputs) == [b"fetched first %d" % index for index in range(5)]
        assert a.executor.known(cid) is not None
        assert c.distribution.counters["lists_served"] == 1


async def test_an_untrusted_signers_capsule_is_refused_as_such(tmp_path, engine):
    source = write_capsule(tmp_path / "src", manifest(), LIMITS_WAT, signer=STRANGER)
    async with open_mesh(tmp_path, engine, 2) as (a, b):
        b.runtime.policy.trust(STRANGER.peer_id)  # B publishes what it would run itself
        cid = await publish(b, source)  # A trusts only the test builder
        with trio.fail_after(STEP):
            await find_providers(a, cid, {b.peer_id})
            with pytest.raises(RemoteRunRefused) as refused:
                await run_remote(b.host, a.peer_id, cid, "echo", b"x")
        assert refused.value.code == "untrusted_signer"
        assert f"signer {STRANGER.peer_id} may not sign for trust zone 'tenant'" in str(refused.value)


async def test_refusals_are_typed(tmp_path, engine):
    source = write_capsule(tmp_path / "src", manifest(timeout_ms=50), LIMITS_WAT)
    limits = RemoteRunLimits(max_input_bytes=1024, fetch_absent=False)
    async with open_mesh(tmp_path, engine, 2, limits) as (a, b):
        cid = await publish(a, source)
        unknown = write_capsule(tmp_path / "other", manifest(version="9.9.9"), LIMITS_WAT)
        other_cid = await publish(b, unknown)
        expectations = [
            (other_cid, "echo", b"", "unknown_capsule", "is not installed on this node"),
            (cid, "echo", bytes(2048), "over_limit", "input at most 1024 bytes"),
            # One byte over: the request's length alone (with room for a long function name) would pass.
            (cid, "echo", bytes(1025), "over_limit", "input at most 1024 bytes"),
            (cid, "spin", b"", "call_failed", ""),
            (cid, "nosuch", b"", "call_failed", "no entry point 'nosuch'"),
        ]
        for target, function, data, code, words in expectations:
            with trio.fail_after(STEP), pytest.raises(RemoteRunRefused) as refused:
                await run_remote(b.host, a.peer_id, target, function, data)
            assert refused.value.code == code and words in str(refused.value)
        # After every refusal the node still serves, up to the limit exactly.
        with trio.fail_after(STEP):
            assert (await run_remote(b.host, a.peer_id, cid, "echo", b"still")).output == b"still"
            assert (await run_remote(b.host, a.peer_id, cid, "echo", bytes(1024))).output == bytes(1024)


def test_a_receipt_that_does_not_attest_the_call_is_rejected(tmp_path):
    from hypermesh.transport.identity import Identity
    from hypermesh.capsules.execution import CallResult

    node = Identity.generate()
    request = RunRequest("b" + "a" * 58, "echo", b"asked")
    genuine = CallResult(b"asked", request.cid, "echo", b"asked", 1, 1, node).receipt
    check_receipt(RunOutcome(b"asked", genuine), request, node.peer_id)
    with pytest.raises(ReceiptMismatch, match="output_hash"):
        check_receipt(RunOutcome(b"changed", genuine), request, node.peer_id)
    with pytest.raises(ReceiptMismatch, match="node"):
        check_receipt(RunOutcome(b"asked", genuine), request, Identity.generate().peer_id)
    forged = dict(genuine, fuel_used=0)
    with pytest.raises(ReceiptMismatch, match="not signed"):
        check_receipt(RunOutcome(b"asked", forged), request, node.peer_id)


async def test_a_flooding_peer_is_held_to_its_limits_while_another_peers_call_completes(tmp_path, engine):
    source = write_capsule(tmp_path / "src", manifest(timeout_ms=20), LIMITS_WAT)
    limits = RemoteRunLimits()
    async with open_mesh(tmp_path, engine, 3, limits) as (a, flooder, other):
        cid = await publish(a, source)
        with trio.fail_after(STEP):
            await run_remote(other.host, a.peer_id, cid, "echo", b"warm")  # installed and active
        outcomes: collections.Counter[str] = collections.Counter()
        first_busy = trio.Event()
        flood_done = trio.Event()
        # The transport allows 256 streams per connection: the flood keeps just under that many open.
        streams = trio.CapacityLimiter(250)

        async def flood_one():
            async with streams:
                try:
                    await run_remote(flooder.host, a.peer_id, cid, "spin", b"")
                    outcomes["ran"] += 1
                except RemoteRunRefused as refused:
                    outcomes[refused.code] += 1
                    if refused.code == "busy":
                        first_busy.set()
                except TransportError as exc:
                    outcomes[type(exc).__name__] += 1

        async def flood():
            async with trio.open_nursery() as requests:
                for _ in range(FLOOD):
                    requests.start_soon(flood_one)
            flood_done.set()

        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(flood)
                await first_busy.wait()
                outcome = await run_remote(other.host, a.peer_id, cid, "echo", b"served meanwhile")
                assert outcome.output == b"served meanwhile"
                assert not flood_done.is_set(), "the other peer's call should complete during the flood"
        assert sum(outcomes.values()) == FLOOD
        assert outcomes["busy"] >= FLOOD // 2, outcomes
        assert set(outcomes) <= {"busy", "call_failed"}, outcomes
        assert a.remote_runs.peak_running_per_peer <= limits.per_peer_running
        assert a.remote_runs.peak_admitted_per_peer <= limits.per_peer_running + limits.per_peer_queued
