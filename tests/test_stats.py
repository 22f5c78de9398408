"""dwml.stats, the one statistics module, against scipy and direct computations."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as ss

from dwml import stats


def test_t_interval_equals_scipy():
    v = [61.2, 58.9, 64.0, 60.5]
    m, lo, hi = stats.t_interval(v)
    want = ss.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=ss.sem(v))
    assert (m, lo, hi) == pytest.approx((np.mean(v), *want))
    m90 = stats.t_interval(v, level=0.9)
    assert m90[1:] == pytest.approx(ss.t.interval(0.9, len(v) - 1, loc=np.mean(v), scale=ss.sem(v)))
    assert math.isnan(stats.t_interval([3.0])[1])


def test_r_interval_maps_the_z_interval_back():
    r = [0.2, 0.5, 0.7]
    z = np.arctanh(r)
    lo, hi = ss.t.interval(0.95, 2, loc=z.mean(), scale=ss.sem(z))
    assert stats.r_interval(r) == pytest.approx((math.tanh(z.mean()), math.tanh(lo), math.tanh(hi)))


def test_bootstrap_ci_equals_a_direct_loop():
    rng = np.random.default_rng(3)
    v = rng.random(40)
    lo, hi = stats.bootstrap_ci(v, n=200, seed=7)
    g = np.random.default_rng(7)
    idx = g.integers(0, v.size, size=(200, v.size))
    means = [float(np.mean([v[i] for i in row])) for row in idx]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))


def test_macro_bootstrap_matches_explicit_resampling_within_tasks():
    rng = np.random.default_rng(0)
    tasks = np.repeat(["a", "b", "c"], [30, 50, 20])
    correct = rng.random(100) < np.repeat([0.9, 0.5, 0.2], [30, 50, 20])
    reps = stats.macro_bootstrap(correct, tasks, n=4000, seed=1)
    g = np.random.default_rng(2)
    explicit = []
    for _ in range(4000):
        accs = [correct[tasks == t][g.integers(0, (tasks == t).sum(), (tasks == t).sum())].mean() for t in "abc"]
        explicit.append(np.mean(accs))
    assert reps.mean() == pytest.approx(np.mean(explicit), abs=3e-3)
    assert reps.std() == pytest.approx(np.std(explicit), rel=0.08)


def test_mcnemar_exact_equals_scipy_binomtest():
    for b, c in [(3, 11), (10, 10), (0, 6), (25, 12)]:
        assert stats.mcnemar_exact(b, c) == pytest.approx(ss.binomtest(b, b + c, 0.5).pvalue)
    assert stats.mcnemar_exact(0, 0) == 1.0


def test_paired_macro_bootstrap_matches_explicit_joint_resampling():
    rng = np.random.default_rng(4)
    strata = np.repeat(["x", "y"], [40, 60])
    a = rng.random(100) < 0.7
    b = np.where(rng.random(100) < 0.6, a, ~a)
    reps = stats.paired_macro_bootstrap(a, b, strata, n=4000, seed=0)
    macro = lambda c: np.mean([c[strata == s].mean() for s in "xy"])  # noqa: E731
    assert np.median(reps) == pytest.approx(macro(a) - macro(b), abs=0.01)
    g = np.random.default_rng(1)
    explicit = []
    for _ in range(4000):
        diffs = []
        for s in "xy":
            idx = np.flatnonzero(strata == s)
            pick = idx[g.integers(0, idx.size, idx.size)]
            diffs.append(a[pick].mean() - b[pick].mean())
        explicit.append(np.mean(diffs))
    assert reps.mean() == pytest.approx(np.mean(explicit), abs=3e-3)
    assert reps.std() == pytest.approx(np.std(explicit), rel=0.08)
    assert np.all(stats.paired_macro_bootstrap(a, a, strata, n=10) == 0)
