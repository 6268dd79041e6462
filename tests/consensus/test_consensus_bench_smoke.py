"""bench/consensus.py --quick runs validator processes, prints one JSON object with every figure it promises.

Targets are not asserted: speed is measured only in bench/ (on a loaded 2-core machine a smoke run's
latencies say little); the anchor is run when etcd is installed, never installed by the test."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "consensus.py"
PROFILE = BENCH.with_name("consensus_profile.py")
CHECK_FIELDS = {"name", "value", "unit", "target", "baseline", "ratio", "met"}


# Four validator processes and (if installed) three etcd members on a shared 2-core machine.
@pytest.mark.timeout(600)
def test_quick_bench_reports_latency_throughput_and_locks_on_real_validator_processes():
    completed = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--no-install", "--seconds", "1", "--transactions", "100",
         "--signing", "ml-dsa-65"],
        capture_output=True, text=True, timeout=570, check=True)
    assert completed.stdout.strip().count("\n") == 0  # exactly one JSON object
    report = json.loads(completed.stdout)
    [chain] = report["chains"]
    assert chain["validators"] == 4
    assert chain["commit_latency_ms"]["n"] > 0 and chain["cpu_ms_per_block_per_validator"] > 0
    assert set(chain["commit_latency_split_ms"]) == {"proposal_to_prevote", "prevote_to_precommit",
                                                     "precommit_to_commit"}
    assert chain["transaction_latency_ms"]["n"] == 10
    assert chain["lock"]["measured"] and chain["lock"]["acquire_ms"]["n"] == 10
    assert chain["throughput"]["transactions"] == 100 and chain["throughput"]["refused"] == 0
    assert "skipped" in report["etcd"] or report["etcd"]["acquire_ms"]["n"] > 0
    # Beside the Ed25519 chain's figures, a chain of ML-DSA-65 validators' empty blocks.
    assert report["signing"] == ["ed25519", "ml-dsa-65"]
    ml_dsa = chain["ml_dsa_65"]
    assert ml_dsa["signing"] == "ml-dsa-65" and ml_dsa["validators"] == 4
    assert ml_dsa["commit_latency_ms"]["n"] > 0 and ml_dsa["cpu_ms_per_block_per_validator"] > 0
    names = {c["name"] for c in report["checks"]}
    assert {"commit_latency_p50_ms_n4", "commit_latency_p99_ms_n4", "transactions_per_second_n4",
            "lock_acquire_p50_ms_n4", "lock_acquire_release_p50_ms_n4", "commit_latency_p50_ms_n4_ml_dsa_65",
            "commit_latency_p99_ms_n4_ml_dsa_65", "cpu_ms_per_block_per_validator_n4_ml_dsa_65"} <= names
    for check in report["checks"]:
        assert set(check) == CHECK_FIELDS


@pytest.mark.timeout(600)
def test_profile_bench_splits_a_height_s_cpu_by_component_and_counts_checks_roots_and_syncs():
    completed = subprocess.run(
        [sys.executable, str(PROFILE), "--heights", "3", "--transactions", "40"],
        capture_output=True, text=True, timeout=570, check=True)
    report = json.loads(completed.stdout)
    for phase in ("empty", "transactions"):
        entry = report[phase]
        assert entry["heights"] >= 1 and entry["cpu_ms_per_height_per_validator"] > 0
        assert entry["components_ms"] and abs(sum(entry["components_share"].values()) - 1) < 0.01
        assert set(entry["per_height_per_validator"]) == {"ed25519_verify", "ed25519_sign", "state_roots_built",
                                                          "leaf_hashes"}
        assert 0 < entry["store_synced_writes"] <= entry["store_writes"]
    assert report["transactions"]["transactions"] == 40


def test_quick_signing_bench_reports_ed25519_and_ml_dsa_65_side_by_side():
    completed = subprocess.run([sys.executable, str(BENCH.with_name("consensus_signing.py")), "--quick",
                                "--votes", "20", "--sizes", "4,7", "--heights", "3"],
                               capture_output=True, text=True, timeout=120, check=True)
    assert completed.stdout.strip().count("\n") == 0
    report = json.loads(completed.stdout)
    ed25519, ml_dsa = report["schemes"]["ed25519"], report["schemes"]["ml-dsa-65"]
    assert (ed25519["signature_bytes"], ml_dsa["signature_bytes"]) == (64, 3309)
    assert ed25519["sign_us"]["n"] == ml_dsa["verify_us"]["n"] == 20
    for scheme in (ed25519, ml_dsa):
        assert [c["validators"] for c in scheme["certificates"]] == [4, 7]
        assert scheme["simulator_ms_per_height"] > 0
    # 7 ML-DSA signatures: the certificate grows by the signature sizes, not more.
    assert ml_dsa["certificates"][1]["bytes"] - ed25519["certificates"][1]["bytes"] == 7 * (3309 + 2 - 64)
    for row in report["checks"]:
        assert set(row) == CHECK_FIELDS
