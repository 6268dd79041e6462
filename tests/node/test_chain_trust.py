"""The chain's verdicts on peers reach the trust engine (node/chain.py), on a real host and trust store."""

import trio

from hypermesh.consensus.tendermint import EquivocationDetected
from hypermesh.consensus.wire import Evidence, Kind, WireError, sign_vote
from hypermesh.node.chain import trust_listeners
from hypermesh.transport.host import open_host
from hypermesh.transport.identity import Identity
from hypermesh.trust.engine import TrustEngine
from hypermesh.trust.score import Dimension
from hypermesh.trust.service import TrustService
from hypermesh.trust.store import TrustStore

V6 = "/ip6/::1/udp/0/quic-v1"


async def test_a_double_vote_shuns_its_signer_and_a_refused_message_counts_against_its_sender(tmp_path):
    me, cheat, sloppy = Identity.generate(), Identity.from_seed(b"cheat"), Identity.from_seed(b"sloppy")
    async with open_host(me, [V6]) as host:
        trust = TrustService(host, me, TrustEngine(me.peer_id), TrustStore.in_data_dir(tmp_path))
        trust.install()
        on_evidence, on_misbehaviour = trust_listeners(trust)
        evidence = Evidence(sign_vote(cheat, "chain", Kind.PRECOMMIT, 7, 0, b"\x01" * 32),
                            sign_vote(cheat, "chain", Kind.PRECOMMIT, 7, 0, b"\x02" * 32))
        with trio.fail_after(10):
            on_evidence(EquivocationDetected(evidence))
            on_misbehaviour(sloppy.peer_id, WireError("a vote for an unknown round"))
        now = trust.clock()
        assert trust.engine.is_shunned(cheat.peer_id, now)
        assert "equivocation" in trust.engine.shunned(now)[cheat.peer_id].reason
        assert not trust.engine.is_shunned(sloppy.peer_id, now)
        _, bad = trust.engine.counts(sloppy.peer_id, Dimension.SECURITY, now)
        assert bad > 0
        trust.store.close()
