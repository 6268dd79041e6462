"""bench/transport.py --quick runs and reports what its figures measure.

A smoke test only: the figures' values depend on the machine's load and are
judged in full bench runs, never here.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench" / "transport.py"
CHECK_FIELDS = {"name", "value", "unit", "target", "baseline", "ratio", "met"}
# The quick bench with its baselines takes about a minute on a quiet machine;
# the fixture bounds it at 600 s, so the tests must not be cut at the default 120 s.
pytestmark = pytest.mark.timeout(660)


@pytest.fixture(scope="module")
def report():
    if not os.path.exists(os.environ.get("HYPERMESH_INTEROP_PY", str(REPO / ".venv-interop" / "bin" / "python"))):
        pytest.skip("interop venv missing (make interop-setup)")
    completed = subprocess.run([sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout)


def test_quick_bench_reports_every_check(report):
    names = {c["name"] for c in report["checks"]}
    assert {"connect_p50_ipv6", "connect_speedup_vs_pylibp2p_quic_nodelay", "ping_rtt_p50_ipv6",
            "resumed_first_ping_p50_ipv6", "bulk_1stream_ipv6", "concurrent_connections_held"} <= names
    for row in report["checks"]:
        assert set(row) == CHECK_FIELDS


def test_connect_ratio_is_reported_with_and_without_pylibp2p_dial_delay(report):
    figures = {f["name"]: f for f in report["figures"]}
    stock, nodelay = figures["connect_vs_pylibp2p_quic_stock"], figures["connect_vs_pylibp2p_quic_nodelay"]
    assert "250 ms" in stock["measures"] and "like for like" in nodelay["measures"]
    assert stock["ratio"] and nodelay["ratio"]
    # The >= 20x check rests on the like-for-like figure only.
    check = next(c for c in report["checks"] if c["name"] == "connect_speedup_vs_pylibp2p_quic_nodelay")
    assert check["baseline"] == nodelay["baseline"]


def test_tcp_baselines_are_set_against_ours(report):
    figures = {f["name"]: f for f in report["figures"]}
    for name in ("connect_vs_pylibp2p_tcp_nodelay", "ping_vs_pylibp2p_tcp", "bulk_vs_pylibp2p_tcp",
                 "connect_vs_trio_tcp", "ping_vs_trio_tcp", "bulk_vs_trio_tcp"):
        assert figures[name]["ours"] is not None and figures[name]["baseline"] is not None, name
        assert figures[name]["ratio"] is not None, name


def test_ours_and_the_baselines_take_equal_samples(report):
    sizes = report["sample_sizes"]
    for figure in report["figures"]:
        if "ours_n" in figure:
            assert figure["ours_n"] == figure["baseline_n"] == (
                sizes["connects"] if figure["name"].startswith("connect") else sizes["pings"]
            ), figure["name"]


def test_namespace_pair_is_measured_at_both_mtus_or_says_why_not(report):
    pairs = report["namespace_pairs"]
    if "skipped" in pairs:
        assert pairs["skipped"]  # not root, not Linux, or no ip command
        return
    for mtu in (1500, 1280):
        pair = pairs[f"mtu_{mtu}"]
        assert "error" not in pair, pair
        assert pair["link_mtu"] == mtu
        for direction in ("download", "upload"):
            assert pair[direction]["direction"] == direction and pair[direction]["mb_per_s"] > 0
            assert pair[direction]["datagram_size"] <= mtu - 48  # IPv6 and UDP headers


def test_js_libp2p_client_downloads_from_us_and_from_js_libp2p_or_says_why_not(report):
    js = report["js_libp2p"]
    if "skipped" in js:
        assert js["skipped"]  # no Node.js, or npm could not install js-libp2p
        return
    for server in ("from_hypermesh", "from_js_libp2p"):
        assert js[server]["completed"] == js["rounds"], js[server]
        assert all(run["bytes"] == js["bytes"] for run in js["samples"][server])
    check = next(c for c in report["checks"] if c["name"] == "js_libp2p_client_download_from_us_vs_from_js_libp2p")
    assert check["baseline"] == js["from_js_libp2p"]["median_mb_per_s"]
