"""The simulator: deterministic for a seed, and trust beats random choice where the paper's defences apply."""

import os
import subprocess
import sys

from hypermesh.trust.sim import SimConfig, run

SMALL = dict(peers=120, cycles=8, candidates=12)


def test_same_seed_same_outcome():
    config = SimConfig(threat_model="collective", seed=7, **SMALL)
    assert run(config).summary() == run(config).summary()


def test_trust_routes_far_fewer_tasks_to_a_malicious_collective_than_random_choice():
    trusted = run(SimConfig(threat_model="collective", malicious_fraction=0.3, **SMALL)).summary()
    randomly = run(SimConfig(threat_model="collective", malicious_fraction=0.3, routing="random", **SMALL)).summary()
    assert randomly["steady_malicious_share"] > 0.2
    assert trusted["steady_malicious_share"] < randomly["steady_malicious_share"] / 4


def test_sybils_without_stake_get_far_less_than_random_choice_gives_them():
    # Half of all providers are Sybils: random choice would give them half the tasks.
    result = run(SimConfig(threat_model="collective", sybils=120, sybil_arrival=4, **SMALL)).summary()
    assert result["sybil_share"] < 0.5 / 3


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
