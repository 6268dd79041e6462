"""bench/trust_sim.py sets the EigenTrust paper's figures beside ours, each series whole and sourced."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "trust_sim.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH.parent))
    try:
        spec = importlib.util.spec_from_file_location("trust_sim_bench", BENCH)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH.parent))


def test_every_series_of_the_paper_is_whole_and_says_where_it_was_read(bench):
    figures = bench.PAPER_FIGURES
    assert "lcsl88/Redes-P2P_20222-Ex1.16" in figures["source"] and "approximate" in figures["read"]
    for model, axis in (("individual", "malicious_fraction"), ("collective", "malicious_fraction"), ("camouflaged", "f")):
        series = figures[model]
        assert len(series[axis]) == len(series["with_trust"]) == len(series["without_trust"])
        assert all(0 <= value <= 1 for value in series["with_trust"] + series["without_trust"])
    for curve in figures["spies"]["with_trust"], figures["spies"]["without_trust"]:
        assert len(curve["authentic_malicious_uploads"]) == len(curve["inauthentic_downloads"])


@pytest.mark.parametrize("fraction", [0.2, 0.4])
def test_each_routing_row_gets_the_papers_value_for_its_model_and_share(bench, fraction):
    assert bench.paper_figure("individual", fraction, 0.5)["malicious_fraction"] == fraction
    assert bench.paper_figure("collective", fraction, 0.5)["with_trust"] <= 0.12
    assert bench.paper_figure("camouflaged", fraction, 0.5)["f"] == 0.5
    assert bench.paper_figure("spies", fraction, 0.5) is None  # counts, not shares: nothing to set beside ours
