"""Remote runs teach the caller's trust engine: a checked receipt counts for the peer, a wrong output shuns it."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import trio

from capsule_testkit import LIMITS_WAT, manifest, write_capsule
from mesh_testkit import STEP, open_mesh
from hypermesh.node.trust_operations import WrongOutput, run_remote_judged
from hypermesh.trust.engine import TrustEngine
from hypermesh.trust.score import Dimension
from hypermesh.trust.service import TrustService


class TamperingExecutor:
    """A provider that answers every call with another output under its own signed receipt."""

    def __init__(self, executor):
        self._executor = executor

    def __getattr__(self, name):
        return getattr(self._executor, name)

    async def run(self, target, function, data):
        result = await self._executor.run(target, function, data)
        result.output = b"not what you asked for"
        result._receipt = None  # signed afresh, over the wrong output
        return result


def caller_with_trust(node):
    trust = TrustService(node.host, node.identity, TrustEngine(node.peer_id))
    trust.install()
    return SimpleNamespace(host=node.host, executor=node.executor, trust=trust)


async def test_a_verified_run_counts_for_the_peer(tmp_path, engine):
    source = write_capsule(tmp_path / "src", manifest(), LIMITS_WAT)
    async with open_mesh(tmp_path, engine, 2) as (honest, caller_node):
        cid = await (honest.distribution.publish(source))
        caller = caller_with_trust(caller_node)
        await caller_node.executor.install(source)
        with trio.fail_after(STEP):
            outcome = await run_remote_judged(caller, honest.peer_id, cid, "echo", b"hello", verify=True)
        assert outcome.output == b"hello"
        good, bad = caller.trust.engine.evidence(honest.peer_id, 0).counts(Dimension.PERFORMANCE, 0, 1)
        assert good > 0 and bad == 0


async def test_a_wrong_output_under_a_signed_receipt_shuns_the_peer(tmp_path, engine):
    source = write_capsule(tmp_path / "src", manifest(), LIMITS_WAT)
    async with open_mesh(tmp_path, engine, 2) as (cheat, caller_node):
        cid = await cheat.distribution.publish(source)
        cheat.remote_runs.executor = TamperingExecutor(cheat.executor)
        caller = caller_with_trust(caller_node)
        await caller_node.executor.install(source)
        with trio.fail_after(STEP), pytest.raises(WrongOutput, match="now shunned"):
            await run_remote_judged(caller, cheat.peer_id, cid, "echo", b"hello", verify=True)
        assert caller.trust.engine.is_shunned(cheat.peer_id, caller.trust.clock())
        assert "proven_wrong_output" in caller.trust.engine.shunned(caller.trust.clock())[cheat.peer_id].reason
        assert caller_node.host.connections_to(cheat.peer_id) == []
