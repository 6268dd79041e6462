"""The benchmark runs (quick mode) and reports every target in the agreed shape."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "capsules.py"
EXPECTED_CHECKS = {
    "core_cold_start_from_cached_artifact_p50",
    "core_warm_call_overhead_p50",
    "component_instantiate_and_first_call_p50",
    "component_1mb_round_trip_p50",
    "admission_5mb_capsule_p50",
    "remote_run_small_call_p50",
}


def test_bench_quick_smoke(shared_cache, python_capsule):
    # python_capsule has filled the build cache the bench reuses.
    result = subprocess.run([sys.executable, str(BENCH), "--quick", "--cache-dir", str(shared_cache)],
                            capture_output=True, text=True, timeout=170)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # exactly one JSON object
    assert {check["name"] for check in report["checks"]} == EXPECTED_CHECKS
    for check in report["checks"]:
        assert set(check) == {"name", "value", "unit", "target", "baseline", "ratio", "met"}
        assert isinstance(check["met"], bool)
        assert check["unit"] in {"ms", "us"} and check["target"] > 0 and check["baseline"] > 0
    assert report["info"]["remote_runs_per_s_8_clients"] > 0
    assert report["info"]["remote_run_latency_ms"]["p99"] >= report["info"]["remote_run_latency_ms"]["p50"]
