"""`hypermesh run` serves /perf/1.0.0 only with --perf (as go-libp2p, perf is
not a default service), on real node processes over [::1]."""

import json

from hypermesh.node.processes import run_cli, start_node


def test_a_node_serves_perf_only_when_run_with_perf(tmp_path):
    with start_node(tmp_path / "plain") as plain, start_node(tmp_path / "perf", extra=["--perf"]) as serving:
        for node, served in ((plain, False), (serving, True)):
            record = json.loads(run_cli("id", node.addr(), "--json", "--data-dir", str(tmp_path / "client")).stdout)
            assert ("/perf/1.0.0" in record["protocols"]) is served
        refused = run_cli("perf", plain.addr(), "--download", "1K", "--data-dir", str(tmp_path / "client"))
        assert refused.returncode == 1
        assert refused.stderr.startswith("error:") and len(refused.stderr.strip().splitlines()) == 1
        done = run_cli("perf", serving.addr(), "--download", "1K", "--json", "--data-dir", str(tmp_path / "client"))
        assert done.returncode == 0 and json.loads(done.stdout)["download_bytes"] == 1024
