"""Global trust: the EigenTrust fixed point, anchored on stake, kept current incrementally."""

import random

import numpy as np
import pytest

from hypermesh.trust.eigentrust import GlobalTrust


def dense_fixed_point(n, rows, stake, damping):
    """The textbook computation, with dense matrices, to check ours against."""
    p = np.zeros(n)
    for peer, s in stake.items():
        p[peer] = s
    p /= p.sum()
    c = np.zeros((n, n))
    for i in range(n):
        row = {j: v for j, v in rows.get(i, {}).items() if j != i and v > 0}
        if row:
            total = sum(row.values())
            for j, v in row.items():
                c[i, j] = v / total
        else:
            c[i] = p
    t = p.copy()
    for _ in range(1000):
        t = (1 - damping) * c.T @ t + damping * p
    return t


def random_graph(rng, n, degree):
    return {i: {rng.randrange(n): rng.random() for _ in range(degree)} for i in range(n) if rng.random() < 0.9}


def test_recompute_matches_the_dense_fixed_point():
    rng = random.Random(3)
    n = 60
    rows = random_graph(rng, n, 5)
    stake = {0: 5.0, 1: 1.0, 2: 2.0}
    trust = GlobalTrust()
    for i in range(n):
        trust.set_row(i, rows.get(i, {}))
    trust.set_stake(stake)
    trust.recompute()
    expected = dense_fixed_point(n, rows, stake, trust.damping)
    assert [trust.trust(i) for i in range(n)] == pytest.approx(list(expected), abs=1e-8)
    assert sum(trust.vector().values()) == pytest.approx(1.0)


def test_incremental_updates_track_the_full_computation():
    rng = random.Random(4)
    n = 200
    rows = random_graph(rng, n, 8)
    trust = GlobalTrust()
    trust.set_stake({0: 1.0, 1: 1.0})
    for i, row in rows.items():
        trust.set_row(i, row)
    trust.recompute()
    for _ in range(30):
        i = rng.randrange(n)
        rows[i] = {rng.randrange(n): rng.random() for _ in range(8)}
        trust.set_row(i, rows[i])
    incremental = np.array([trust.trust(i) for i in range(n)])
    trust.recompute()
    full = np.array([trust.trust(i) for i in range(n)])
    assert np.abs(incremental - full).sum() < 0.01


def test_a_clique_without_stake_or_incoming_trust_gets_nothing():
    trust = GlobalTrust()
    honest = [f"h{i}" for i in range(10)]
    sybils = [f"s{i}" for i in range(1000)]
    trust.set_stake({"h0": 1.0})
    for i, peer in enumerate(honest):
        trust.set_row(peer, {honest[(i + 1) % 10]: 1.0})
    for i, sybil in enumerate(sybils):
        trust.set_row(sybil, {sybils[(i + k) % 1000]: 1.0 for k in range(1, 6)} | {"h3": 0.1})
    trust.recompute()
    assert sum(trust.trust(s) for s in sybils) == 0.0
    assert sum(trust.trust(h) for h in honest) == pytest.approx(1.0)


def test_stake_decides_where_trust_starts():
    trust = GlobalTrust()
    trust.set_stake({"a": 3.0, "b": 1.0})
    trust.recompute()
    assert trust.trust("a") == pytest.approx(0.75)
    trust.set_stake({"b": 1.0})
    assert trust.trust("a") == pytest.approx(0.0, abs=1e-5)
    assert trust.trust("b") == pytest.approx(1.0, abs=1e-5)


def test_self_trust_and_non_positive_weights_are_ignored():
    trust = GlobalTrust()
    trust.set_stake({"v": 1.0})
    trust.set_row("v", {"v": 5.0, "x": -1.0, "y": float("nan"), "z": 1.0})
    assert trust.row("v") == {"z": 1.0}


def test_damping_must_be_a_fraction():
    with pytest.raises(ValueError):
        GlobalTrust(damping=1.0)


def test_a_deferred_vector_waits_for_recompute_and_then_matches():
    rng = random.Random(6)
    n = 60
    rows = random_graph(rng, n, 5)
    stake = {0: 1.0, 3: 2.0}
    trust = GlobalTrust(deferred=True)
    trust.set_stake(stake)
    for i in range(n):
        trust.set_row(i, rows.get(i, {}))
    assert sum(trust.vector().values()) == 0.0  # nothing pushed yet
    trust.recompute()
    expected = dense_fixed_point(n, rows, stake, trust.damping)
    assert [trust.trust(i) for i in range(n)] == pytest.approx(list(expected), abs=1e-8)
