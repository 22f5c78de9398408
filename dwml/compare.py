"""Per-seed and per-pair statistics of scored runs: macro accuracy per seed, the mean over seeds, the peer a
run keeps, differences between methods (a t-interval over seeds, a bootstrap over pairs) and their verdicts.

Input is the per-pair scores of :func:`dwml.scoring.score_run` (columns ``method``, ``seed``, ``peer``,
``suite``, ``task``, ``pair_id``, ``correct``, ``tie``). Averages are BabyLM's: a suite's score is the macro
average over its tasks, per seed; intervals over seeds are t-intervals (:func:`dwml.stats.t_interval`).
"""
from __future__ import annotations

from typing import Sequence

import math

import numpy as np
import pandas as pd

from dwml.methods import dwml_method, single_model_method
from dwml.reports import check_one_to_one
from dwml.stats import paired_macro_bootstrap, t_interval


def per_seed(scores: pd.DataFrame, keys: Sequence[str] = ("method", "peer")) -> pd.DataFrame:
    """Macro accuracy (%) of each suite per (keys..., seed): the mean over a suite's tasks of the task's
    accuracy, a tie counting as wrong."""
    keys = list(keys)
    task = scores.groupby(keys + ["seed", "suite", "task"], sort=False)["correct"].mean().reset_index()
    return (task.groupby(keys + ["seed", "suite"], sort=False)["correct"].mean() * 100).rename("accuracy").reset_index()


def over_seeds(seeded: pd.DataFrame, keys: Sequence[str] = ("method", "peer")) -> pd.DataFrame:
    """Mean over seeds with its 95% t-interval, one row per (keys..., suite)."""
    rows = []
    for key, part in seeded.groupby(list(keys) + ["suite"], sort=False):
        m, lo, hi = t_interval(part["accuracy"])
        rows.append({**dict(zip(list(keys) + ["suite"], key)), "accuracy": m, "ci_low": lo, "ci_high": hi,
                     "seeds": part["seed"].nunique()})
    return pd.DataFrame(rows)


def best_peer(seeded: pd.DataFrame, by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """Per (``by``..., seed, suite), the accuracy of the peer that is best on average over the suites: what a
    user who had to pick one peer of a run would keep (the paper's "Best" column picks per suite instead,
    which flatters a method by choosing after seeing each test)."""
    by = list(by)
    avg = seeded.groupby(by + ["seed", "peer"])["accuracy"].mean().rename("avg").reset_index()
    pick = avg.loc[avg.groupby(by + ["seed"])["avg"].idxmax(), by + ["seed", "peer"]]
    return seeded.merge(pick, on=by + ["seed", "peer"])


def best_peer_choice(scores: pd.DataFrame) -> pd.DataFrame:
    """Which peer :func:`best_peer` keeps for each (method, seed): the rows (method, seed, peer)."""
    return best_peer(per_seed(scores))[["method", "seed", "peer"]].drop_duplicates()


def weakest_peers(scores: pd.DataFrame) -> pd.DataFrame:
    """Each method's weakest peer per suite (lowest mean over seeds) with its 95% interval, the peer in
    ``weakest_peer``: an interval well above chance says every peer of the method learnt the suite."""
    return (over_seeds(per_seed(scores)).sort_values("accuracy").groupby(["method", "suite"], sort=False).head(1)
            .rename(columns={"peer": "weakest_peer"}).sort_values(["suite", "method"]))


def t_over_seeds(seeded: pd.DataFrame, reference: str, key: str = "method") -> pd.DataFrame:
    """Each ``key`` value against ``reference``, paired by seed: the mean over seeds of (its accuracy minus the
    reference's, in points) with a 95% t-interval, per suite. ``seeded``: one accuracy per (key, seed, suite),
    e.g. ``best_peer(per_seed(scores))``. An interval that excludes 0 is what "the methods differ" means
    here; pairing by seed removes what the seeds share (the corpus order, the initialisation).

    Only seeds that both have are used; ``differs`` is True when the interval excludes 0."""
    ref = seeded[seeded[key] == reference][["seed", "suite", "accuracy"]].rename(columns={"accuracy": "ref"})
    if ref.empty:
        raise ValueError(f"t_over_seeds: reference {reference!r} is not among {sorted(seeded[key].unique())}")
    both = seeded[seeded[key] != reference].merge(ref, on=["seed", "suite"])
    rows = []
    for (k, suite), part in both.groupby([key, "suite"], sort=False):
        m, lo, hi = t_interval(part["accuracy"] - part["ref"])
        rows.append({key: k, "reference": reference, "suite": suite, "difference": m, "ci_low": lo, "ci_high": hi,
                     "seeds": len(part), "differs": bool(lo > 0 or hi < 0)})
    return pd.DataFrame(rows)


def method_differences(seeded: pd.DataFrame, methods: Sequence[str]) -> pd.DataFrame:
    """Every method against DWML and then against the single model (those of ``methods``:
    :func:`dwml.methods.dwml_method`, :func:`dwml.methods.single_model_method`), paired by seed
    (:func:`t_over_seeds` on ``seeded``, e.g. ``best_peer(per_seed(scores))``), each row with its
    ``verdict`` sentence (:func:`verdicts`)."""
    references = [r for r in (dwml_method(methods), single_model_method(methods)) if r]
    if not references:
        raise ValueError(f"method_differences: no DWML and no single-model method among {list(methods)}")
    diffs = pd.concat([t_over_seeds(seeded, r) for r in references], ignore_index=True)
    diffs["verdict"] = verdicts(diffs, "method")
    return diffs


def bootstrap_on_pairs(mine: pd.DataFrame, other: pd.DataFrame, n_boot: int, seed: int, where: str
                     ) -> tuple[pd.DataFrame, float, float]:
    """Two kept peers' per-pair scores of one suite joined on (seed, suite, task, pair_id), with the 95%
    paired bootstrap interval of their macro difference in points (:func:`dwml.stats.paired_macro_bootstrap`,
    strata = each seed's task). ``where`` starts the error raised when they were not scored on the same pairs."""
    keys = ["seed", "suite", "task", "pair_id"]
    check_one_to_one(mine, keys, f"{where}: the first")
    check_one_to_one(other, keys, f"{where}: the reference")
    both = mine[keys + ["correct"]].merge(other[keys + ["correct"]], on=keys, suffixes=("", "_ref"))
    if len(both) != len(mine) or len(both) != len(other):
        suite = mine["suite"].iloc[0] if len(mine) else other["suite"].iloc[0]
        raise ValueError(f"{where} are not scored on the same pairs of suite {suite!r}")
    both["stratum"] = both["seed"].astype(str) + "/" + both["task"].astype(str)
    reps = paired_macro_bootstrap(both["correct"], both["correct_ref"], both["stratum"], n_boot, seed)
    lo, hi = np.quantile(reps, [0.025, 0.975]) * 100
    return both, float(lo), float(hi)


def bootstrap_over_pairs(scores: pd.DataFrame, reference: str, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Each method's kept peer (:func:`best_peer_choice`) against ``reference``'s, paired by pair: per suite,
    the macro accuracy difference in points (seeds pooled) with a 95% paired bootstrap interval (the same
    pairs resampled for both within each seed's task: :func:`dwml.stats.paired_macro_bootstrap`). With one
    seed this is the interval a comparison of seeds cannot give; it holds the pairs' sampling error only,
    not the seeds'. ``seed_ci_low`` / ``seed_ci_high``: with two or more seeds, the paired t-interval over
    seeds of each seed's macro difference (:func:`dwml.stats.t_interval`; NaN with one seed), which holds
    the seeds' error too. Each row has its ``verdict`` (:func:`verdict`, on the interval over pairs)."""
    chosen = scores.merge(best_peer_choice(scores), on=["method", "seed", "peer"])
    ref = chosen[chosen["method"] == reference]
    if ref.empty:
        raise ValueError(f"bootstrap_over_pairs: reference {reference!r} is not among {sorted(scores['method'].unique())}")
    rows = []
    for (method, suite), mine in chosen[chosen["method"] != reference].groupby(["method", "suite"], sort=False):
        both, lo, hi = bootstrap_on_pairs(mine, ref[ref["suite"] == suite], n_boot, seed,
                                        f"bootstrap_over_pairs: {method!r} and {reference!r}")
        by = both.groupby("stratum")
        diff = 100 * (by["correct"].mean() - by["correct_ref"].mean()).mean()
        per_task = both.groupby(["seed", "task"])[["correct", "correct_ref"]].mean()
        per_seed_diff = 100 * (per_task["correct"] - per_task["correct_ref"]).groupby(level="seed").mean()
        _, s_lo, s_hi = t_interval(per_seed_diff)
        rows.append({"method": method, "reference": reference, "suite": suite, "difference": diff,
                     "ci_low": lo, "ci_high": hi, "seed_ci_low": s_lo, "seed_ci_high": s_hi,
                     "pairs": len(both), "seeds": both["seed"].nunique(),
                     "verdict": verdict(method, reference, diff, lo, hi, suite)})
    return pd.DataFrame(rows)


def verdict(a: str, b: str, difference: float, low: float, high: float, suite: str = "") -> str:
    """One plain sentence for a paired difference ``a - b`` (points) with its 95% interval [low, high].

    An interval above 0: "a beats b by x points [lo, hi]"; below 0: "b beats a by ..." (the interval
    mirrored). One that contains 0: "no difference between a and b larger than h points", with h the
    largest |difference| the interval allows, max(|lo|, |hi|): the half-width alone would understate it
    whenever the estimate is not 0 (x = 1 [-2, 4] allows a difference of 4, not 3); the estimate and the
    half-width follow in brackets. A missing interval (one seed) says so instead of a verdict."""
    where = f" on {suite}" if suite else ""
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{a} - {b}{where}: {difference:+.1f} points (one seed: no interval, no verdict)"
    if low > 0:
        return f"{a} beats {b}{where} by {difference:.1f} points [{low:.1f}, {high:.1f}]"
    if high < 0:
        return f"{b} beats {a}{where} by {-difference:.1f} points [{-high:.1f}, {-low:.1f}]"
    bound = max(abs(low), abs(high))
    return (f"no difference between {a} and {b}{where} larger than {bound:.1f} points "
            f"({a} - {b} = {difference:+.1f} [{low:+.1f}, {high:+.1f}], half-width {(high - low) / 2:.1f})")


def verdicts(table: pd.DataFrame, a: str, b: str = "reference", label: str | None = None) -> list[str]:
    """:func:`verdict` for every row of a differences table (:func:`t_over_seeds`, :func:`bootstrap_over_pairs`, ``ablation_differences``):
    ``a``/``b`` name the columns that hold the two sides; ``label``, a column whose value prefixes the
    sentence (an ablation's claim). The suite is named when the table has more than one."""
    many = table["suite"].nunique() > 1 if "suite" in table else False
    out = []
    for _, r in table.iterrows():
        s = verdict(f"{r[a]}", f"{r[b]}", float(r["difference"]), float(r["ci_low"]), float(r["ci_high"]),
                    suite=str(r["suite"]) if many else "")
        out.append(f"{r[label]}: {s}" if label else s)
    return out
