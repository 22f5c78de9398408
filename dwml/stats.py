"""Intervals and tests, one module for the whole package: over seeds (t, Fisher z) and over pairs (bootstrap,
exact McNemar).

``dwml.compare`` summarises runs over seeds with :func:`t_interval` / :func:`r_interval`;
``dwml.reports`` summarises one model's per-pair results with :func:`bootstrap_ci` /
:func:`macro_bootstrap` and compares two models with :func:`paired_bootstrap` and :func:`mcnemar_exact`.
Every interval is a two-sided 95% one unless ``level`` says otherwise; bootstraps take a fixed seed.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np


# --------------------------------------------------------------------------------------------------
# Over seeds
# --------------------------------------------------------------------------------------------------

def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of a Student-t interval over seeds; low = high = NaN for a single value."""
    from scipy import stats

    v = np.asarray(values, dtype=float)
    m = float(v.mean())
    if v.size < 2:
        return m, math.nan, math.nan
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - half, m + half


def r_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of correlation coefficients over seeds, through Fisher's z = atanh(r): the t-interval
    of the mean z, mapped back with tanh, so that the interval stays inside (-1, 1) (a t-interval on R
    itself does not: R's spread shrinks near +-1). |r| = 1 is clipped to 1 - 1e-12."""
    z = np.arctanh(np.clip(np.asarray(values, dtype=float), -1 + 1e-12, 1 - 1e-12))
    m, lo, hi = t_interval(z, level)
    return float(np.tanh(m)), float(np.tanh(lo)), float(np.tanh(hi))


# --------------------------------------------------------------------------------------------------
# Over pairs
# --------------------------------------------------------------------------------------------------

def bootstrap_ci(values, n: int = 1000, seed: int = 0, level: float = 0.95,
                 stat: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of ``stat`` (the mean by default) over ``values``: ``n`` resamples of
    the same size, drawn with replacement, with a fixed seed."""
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return (math.nan, math.nan)
    if n < 1:
        raise ValueError(f"n={n}: bootstrap needs at least one resample")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n, values.size))
    stats = (stat or (lambda v: v.mean(axis=1)))(values[idx])
    lo, hi = np.quantile(stats, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def macro_bootstrap(correct: np.ndarray, tasks: np.ndarray, n: int = 1000, seed: int = 0) -> np.ndarray:
    """``n`` bootstrap replicates of the macro accuracy (mean over tasks of each task's accuracy), pairs
    resampled within each task: a task's resampled accuracy is Binomial(n_task, acc_task) / n_task."""
    rng = np.random.default_rng(seed)
    correct = np.asarray(correct, dtype=np.float64)
    names, inverse = np.unique(np.asarray(tasks), return_inverse=True)
    sizes = np.bincount(inverse, minlength=len(names))
    acc = np.bincount(inverse, weights=correct, minlength=len(names)) / sizes
    draws = rng.binomial(sizes[None, :], acc[None, :], size=(n, len(names))) / sizes[None, :]
    return draws.mean(axis=1)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under H0 the b + c discordant pairs split Binomial(b + c, 1/2)."""
    from scipy.stats import binom

    n = b + c
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(min(b, c), n, 0.5)))


def paired_macro_bootstrap(correct_a, correct_b, strata, n: int = 1000, seed: int = 0) -> np.ndarray:
    """``n`` bootstrap replicates of macro(a) - macro(b) for two models scored on the *same* pairs: within
    each stratum (a task, or a (seed, task)) the pairs are resampled together for both models, and the
    macro average is the mean over strata. Resampling m pairs of a stratum draws the counts of its four
    kinds of pair (both right, only a, only b, neither) from Multinomial(m, their shares), so a
    replicate's difference there is (only a - only b) / m."""
    a = np.asarray(correct_a, dtype=bool)
    b = np.asarray(correct_b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"correct_a {a.shape} and correct_b {b.shape} must be 1-D arrays over the same pairs")
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(np.asarray(strata), return_inverse=True)
    k = inverse.max() + 1 if inverse.size else 0
    out = np.zeros(n)
    for s in range(k):
        sel = inverse == s
        m = int(sel.sum())
        only_a, only_b = int((a[sel] & ~b[sel]).sum()), int((~a[sel] & b[sel]).sum())
        draws = rng.multinomial(m, [only_a / m, only_b / m, 1 - (only_a + only_b) / m], size=n)
        out += (draws[:, 0] - draws[:, 1]) / m
    return out / max(k, 1)
