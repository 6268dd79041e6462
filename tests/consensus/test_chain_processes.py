"""The chain with every validator a separate process on loopback: kill -9 and restart; a double signer.

Each test takes tens of seconds, nearly all of it four Python processes
starting (seconds each on two loaded cores): the crash and the slashing must
happen to real processes, which the in-process tests cannot show.
"""

from chain_procs_testkit import ProcessChain, conflicting_signatures, signed_messages
from hypermesh.consensus.ledger import Ledger
from ledger_testkit import STAKE, VALIDATOR_IDS, key, make_genesis

LOOPBACK = "/ip4/127.0.0.1/udp/0/quic-v1"


def test_a_validator_killed_with_sigkill_restarts_catches_up_and_never_signs_conflicting_votes(tmp_path):
    genesis = make_genesis()
    chain = ProcessChain(tmp_path, genesis, [LOOPBACK] * 4)
    victim, others = chain.validators[2], [0, 1, 3]
    try:
        chain.start_on_loopback()
        chain.all_reach(3)
        chain.kill(victim.index)
        killed_at = victim.height
        chain.all_reach(max(chain.heights()) + 3, others, "the chain going on without the killed validator")
        # Restarted from its store, where a restarted node listens: its configured port.
        victim.listen = victim.addrs[0].rsplit("/p2p/", 1)[0]
        chain.start([victim.index])
        chain.introduce()
        behind = max(chain.heights())
        chain.all_reach(behind + 3, what="the restarted validator catching up with the others")
        # And it is a validator again: its precommits are in the certificates of new blocks.
        position = Ledger(genesis).validators.index_of(key(VALIDATOR_IDS[victim.index]))
        chain.wait_until(lambda: any(position in signers for h, signers in chain.validators[0].signers.items()
                                     if h > behind), "a certificate signed by the restarted validator")
        chain.assert_no_divergence()
        signed = signed_messages(victim.data_dir)
        assert conflicting_signatures(signed) == []
        assert max(m.height for m in signed) > behind, "the restarted validator signed nothing new"
        assert killed_at < behind
        assert all(not v.evidence for v in chain.validators), "equivocation evidence (against it or anyone)"
    finally:
        chain.stop()


def test_a_validator_that_double_signs_is_slashed_and_jailed_on_chain_and_the_chain_goes_on(tmp_path):
    genesis = make_genesis()
    chain = ProcessChain(tmp_path, genesis, [LOOPBACK] * 4)
    cheat, honest = chain.validators[0], [1, 2, 3]
    try:
        chain.start_on_loopback(double_sign={cheat.index})

        def punished(index):
            status = chain.validators[index].status
            return cheat.key in status.get("tombstoned", ()) and cheat.key not in status.get("validators", ())

        chain.wait_until(lambda: all(punished(i) for i in honest), "the double signer slashed and jailed")
        assert cheat.double_signed > 0
        # The evidence was detected by honest validators and carried in a block they all decided.
        assert any(cheat.key in chain.validators[i].evidence for i in honest)
        assert all(v.evidence <= {cheat.key} for v in chain.validators), "evidence against an honest validator"
        assert [h for h, keys in chain.validators[1].evidence_in.items() if cheat.key in keys], \
            "no decided block carries the evidence"
        status = chain.validators[1].status
        assert status["burned"] == STAKE * genesis.params.double_sign_slash_bps // 10_000
        # The chain goes on with the three honest validators, who decide the same blocks.
        chain.all_reach(max(chain.heights()) + 3, honest, "the chain going on without the double signer")
        chain.assert_no_divergence()
        for index in honest:
            assert conflicting_signatures(signed_messages(chain.validators[index].data_dir)) == []
    finally:
        chain.stop()
