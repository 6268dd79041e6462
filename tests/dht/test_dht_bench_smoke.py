"""bench/dht_sim.py --quick runs, prints one JSON object and meets its targets."""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dht_sim.py"
CHECK_FIELDS = {"name", "value", "unit", "target", "baseline", "ratio", "met"}


def test_quick_bench_meets_every_target():
    completed = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=110, check=True
    )
    report = json.loads(completed.stdout)
    assert completed.stdout.strip().count("\n") == 0  # exactly one JSON object
    names = {c["name"] for c in report["checks"]}
    assert {"lookup_success_no_churn", "lookup_success_30pct_churn", "median_hops", "messages_per_lookup",
            "reprovide_messages_per_record"} <= names
    for check in report["checks"]:
        assert set(check) == CHECK_FIELDS
        assert check["met"], check
