"""bench/dht.py --quick: real QUIC hosts in worker processes, one JSON object with every check.

Only the shape is checked (the quick run is too small for its figures to mean
anything, and the machine is shared); the baselines run if the interop venv exists.
"""

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dht.py"
CHECK_FIELDS = {"name", "value", "unit", "target", "baseline", "ratio", "met"}


def test_quick_real_dht_bench_prints_one_report():
    completed = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=90, check=True
    )
    assert completed.stdout.strip().count("\n") == 0  # exactly one JSON object
    report = json.loads(completed.stdout)
    assert report["bench"] == "dht" and report["quick"] is True
    assert len(report["loadavg_start"]) == 3
    ours = report["hypermesh"]
    assert ours["errors"] == {}, ours["errors"]
    assert ours["nodes"] == 12 and ours["nodes_with_empty_routing_table"] == 0
    for wanted in (1, 20):
        lookups = ours[f"find_providers_wanted{wanted}"]
        assert lookups["wanted"] == wanted
        assert lookups["lookups"] == 20 and lookups["success_rate"] >= 0.9
        # 12 nodes and k = 20: every seeker stores every record, so all are local hits, reported apart.
        assert lookups["local_hits"]["lookups"] + lookups["remote"]["lookups"] == 20
    assert ours["stale_answers_dropped"] == 0
    assert ours["services"]["registered"] >= 90
    assert ours["resolve_service"]["cached_ms"]["p50"] < 1
    names = [c["name"] for c in report["checks"]]
    for prefix in ("find_providers_p50_ms_", "find_providers_p99_ms_", "find_providers_converged_p50_ms_",
                   "find_providers_converged_p99_ms_", "find_providers_success_rate_wanted1_",
                   "find_providers_success_rate_wanted20_", "cached_resolve_p50_ms_",
                   "find_providers_p50_vs_kademlia_pkg", "find_providers_p50_vs_pylibp2p_kad"):
        assert any(name.startswith(prefix) for name in names), (prefix, names)
    for check in report["checks"]:
        assert set(check) == CHECK_FIELDS
        assert isinstance(check["met"], bool)
    assert "kademlia" in report["baselines"] or "error" in report["baselines"]
