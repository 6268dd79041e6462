"""The simulator: deterministic for a seed, and each threat model held at bay in the quick bench's setting.

The per-model tests run the quick bench's setting (150 peers, 10 cycles,
20 candidates, seed 1) and hold every figure the bench checks to its
target, so a change that lets any model through fails here, not only in a
bench nobody ran.
"""

import os
import subprocess
import sys

import pytest

from hypermesh.trust.sim import THREAT_MODELS, SimConfig, TrustSim, run

SMALL = dict(peers=120, cycles=8, candidates=12)
QUICK = dict(peers=150, cycles=10, seed=1)


def test_same_seed_same_outcome():
    config = SimConfig(threat_model="collective", seed=7, **SMALL)
    assert run(config).summary() == run(config).summary()


@pytest.mark.parametrize("fraction", [0.2, 0.4])
@pytest.mark.parametrize("model", THREAT_MODELS)
def test_each_threat_model_gets_at_most_five_percent_of_the_tasks(model, fraction):
    result = run(SimConfig(threat_model=model, malicious_fraction=fraction, **QUICK)).summary()
    assert result["steady_malicious_share"] <= 0.05


def test_trust_routes_far_fewer_tasks_to_malicious_peers_than_own_observations_or_random_choice():
    shares = {
        routing: run(SimConfig(threat_model="camouflaged", malicious_fraction=0.4, routing=routing, **QUICK))
        .summary()["steady_malicious_share"]
        for routing in ("trust", "local", "random")
    }
    assert shares["random"] > 0.3
    assert shares["trust"] < shares["local"] / 4 < shares["random"] / 4


def test_sybils_without_stake_get_at_most_one_percent_of_the_tasks():
    # As many Sybils as peers: random choice would give them half the tasks.
    result = run(SimConfig(threat_model="collective", sybils=150, sybil_arrival=3, **QUICK)).summary()
    assert result["sybil_share"] <= 0.01


def test_whitewashing_gains_nothing_over_keeping_a_bad_identity():
    result = run(SimConfig(threat_model="individual", whitewashers=15, **QUICK)).summary()
    assert result["whitewasher_tasks"] <= result["stayer_tasks"]


def test_a_whitewasher_offers_work_under_one_identity_at_a_time():
    sim = TrustSim(SimConfig(threat_model="individual", whitewashers=15, **QUICK))
    sim.run()
    owners = [sim.owner(identity) for identity in sim.providers(QUICK["cycles"])]
    assert len(owners) == len(set(owners))
    assert all(owner in owners for owner in sim.whitewashers)
    assert any(sim.owner(identity) != identity for identity in sim.providers(QUICK["cycles"]))


def test_same_seed_same_outcome_whatever_the_processs_hash_seed():
    script = ("import json; from hypermesh.trust.sim import SimConfig, run; "
              "print(json.dumps(run(SimConfig(threat_model='camouflaged', malicious_fraction=0.4, "
              "peers=80, cycles=4, candidates=10)).summary()))")
    outputs = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed}).stdout
        for hash_seed in ("1", "2")
    }
    assert len(outputs) == 1
