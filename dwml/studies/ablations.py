"""Notebook 04's study: the paper's Figure 2 ablations over seeds (the number of peers, alpha, learned against
fixed weights, peer size and learned weight against accuracy, the published learning rate), each ablated
setting against the profile's own, and which of the paper's claims survive."""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from dwml.compare import best_peer, over_seeds, per_seed, t_over_seeds, verdicts
from dwml.runs import Study
from dwml.stats import r_interval
from dwml.executor import RunSpec
from dwml.studies.study import run_and_score, variant_specs

SWEEPS = {
    "num_peers": lambda k: {"tag": f"p{k}", "num_peers": k},  # DWML with the k largest peers
    "alpha": lambda a: {"tag": f"a{a}", "train_overrides": {"loss_alpha": a}},  # a in eq. 2
}
"""Setting -> the run of one of its values (its folder tag and what differs from the profile's run)."""


def sweep(study: Study, setting: str, values: Sequence, seeds: Sequence[int], base_value, base_scores: pd.DataFrame,
          method: str = "dwml", executor=None) -> pd.DataFrame:
    """The per-pair scores of ``method``'s runs at every value of ``setting`` (a key of :data:`SWEEPS`), over
    ``seeds``, in a column named ``setting``; ``base_value``'s are ``base_scores`` (the profile's own runs,
    shared with notebooks 02 and 03), the others trained (or reused) under their own tag on ``executor``."""
    if setting not in SWEEPS:
        raise ValueError(f"sweep: unknown setting {setting!r}; known: {sorted(SWEEPS)}")
    frames = []
    for v in values:
        sc = base_scores if v == base_value else run_and_score(study, method, seeds, executor=executor,
                                                               **SWEEPS[setting](v))[0]
        frames.append(sc.assign(**{setting: v}))
    return pd.concat(frames, ignore_index=True)


def specs(seeds: Sequence[int], peers: Sequence[int], alphas: Sequence[float], all_peers: int, base_alpha: float,
          published_lr: Mapping, method: str = "dwml") -> list[RunSpec]:
    """Every run of the notebook, so that one executor call trains them all at once (the later calls reuse
    them): the profile's DWML and DML runs, each swept value but the profile's own, the published learning rate."""
    out = variant_specs(method, seeds) + variant_specs("dml", seeds)
    # the longest runs first (every peer trained), the fewest peers last: the pool's last run is then a short one
    out += variant_specs(method, seeds, "publishedlr", train_overrides=published_lr)
    for setting, values, base in (("alpha", alphas, base_alpha), ("num_peers", sorted(peers, reverse=True), all_peers)):
        out += [s for v in values if v != base for s in variant_specs(method, seeds, **SWEEPS[setting](v))]
    return out


def ablation_table(scores: pd.DataFrame, setting: str) -> pd.DataFrame:
    """One row per (``setting`` value, suite): the best peer's accuracy, mean over seeds with its 95% interval;
    ``scores`` must carry a ``setting`` column (the number of peers, alpha, ...)."""
    best = best_peer(per_seed(scores, keys=(setting, "peer")), by=(setting,))
    return over_seeds(best, keys=(setting,))


def ablation_differences(scores: pd.DataFrame, setting: str, reference) -> pd.DataFrame:
    """Each value of an ablated ``setting`` against ``reference`` (the profile's own value), paired by seed:
    the best peer per (setting, seed), as :func:`ablation_table` picks it, then :func:`dwml.compare.t_over_seeds`.
    The setting's values are in a column named ``value`` (so that studies stack into one table)."""
    seeded = best_peer(per_seed(scores, keys=(setting, "peer")), by=(setting,))
    out = t_over_seeds(seeded, reference, key=setting)
    return out.rename(columns={setting: "value"}).assign(setting=setting)


def pearson_by_seed(scores: pd.DataFrame, weights: Mapping[int, Sequence[float]], params: Mapping[int, int]) -> pd.DataFrame:
    """Per seed of one method's runs: Pearson R between peer size and accuracy (the mean over suites of the
    macro accuracy) and between learned weight and accuracy (the paper's Figure 2c reports R = 0.7).
    ``weights``: seed -> final w; ``params``: peer (1-based) -> parameter count."""
    seeded = per_seed(scores, keys=("peer",))
    acc = seeded.groupby(["seed", "peer"])["accuracy"].mean().reset_index()
    rows = []
    for seed, part in acc.groupby("seed"):
        part = part.sort_values("peer")
        w = list(weights[seed])
        x_size = [params[p] for p in part["peer"]]
        x_w = [w[p - 1] for p in part["peer"]]
        ok = len(part) > 2
        rows.append({"seed": seed, "peers": len(part),
                     "r_size_accuracy": scipy_stats.pearsonr(x_size, part["accuracy"])[0] if ok else math.nan,
                     "r_weight_accuracy": scipy_stats.pearsonr(x_w, part["accuracy"])[0] if ok and len(set(x_w)) > 1 else math.nan})
    return pd.DataFrame(rows)


def size_weight_points(scores: pd.DataFrame, weights: Mapping[int, Sequence[float]],
                       params: Mapping[int, int]) -> pd.DataFrame:
    """Per seed and peer: the accuracy (mean over suites of the macro accuracy), the peer's parameter count
    and its final learned weight: the points of Figure 2c. ``weights``: seed -> final w; ``params``: peer
    (1-based) -> parameter count."""
    seeded = per_seed(scores, keys=("peer",)).groupby(["seed", "peer"])["accuracy"].mean().reset_index()
    seeded["params"] = seeded["peer"].map(params)
    seeded["weight"] = [weights[s][p - 1] for s, p in zip(seeded["seed"], seeded["peer"])]
    return seeded


def size_tables(scores: pd.DataFrame, results: Mapping, params: Mapping[int, int]
                ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Figure 2c's study of one method's runs (``results``: seed -> run, its final weights): the Pearson R per
    seed (:func:`pearson_by_seed`), the same with a row per quantity below it giving the mean over seeds and
    its 95% interval through Fisher's z (:func:`dwml.stats.r_interval`; the table that is saved), and the
    points of the figure (:func:`size_weight_points`)."""
    weights = {s: res.weights for s, res in results.items()}
    r = pearson_by_seed(scores, weights, params)
    summary = pd.DataFrame([{"seed": c, **dict(zip(["mean", "ci_low", "ci_high"],
                                                    r_interval(r[c].dropna()) if r[c].notna().any() else (np.nan,) * 3))}
                            for c in ("r_size_accuracy", "r_weight_accuracy")])
    table = pd.concat([r.astype({"seed": str}), summary], ignore_index=True)
    return r, table, size_weight_points(scores, weights, params)


def final_dev_losses(results_by_label: Mapping[str, Mapping]) -> pd.DataFrame:
    """Per label (a schedule, say) and seed, the mean over a run's peers of the final dev cross-entropy;
    ``results_by_label``: label -> (seed -> run)."""
    return pd.DataFrame([{"schedule": label, "seed": s, "final_dev_ce": float(np.mean(res.summary["final_dev_ce"]))}
                         for label, results in results_by_label.items() for s, res in results.items()])


def claims_table(studies: Sequence[tuple[str, pd.DataFrame, str, object]]) -> pd.DataFrame:
    """Which of the paper's claims survive: per claim, every ablated value against the profile's own
    (:func:`ablation_differences`), stacked, with its ``verdict`` sentence. ``studies``: (claim, scores,
    setting, reference value) per claim; ``value`` and ``reference`` as strings."""
    claims = pd.concat([ablation_differences(scores, setting, ref).assign(claim=claim)
                        for claim, scores, setting, ref in studies], ignore_index=True)
    claims["value"] = claims["value"].astype(str)
    claims["reference"] = claims["reference"].astype(str)
    claims = claims[["claim", "setting", "value", "reference", "suite", "difference", "ci_low", "ci_high", "seeds",
                     "differs"]]
    claims["verdict"] = verdicts(claims.assign(value=claims["setting"] + " " + claims["value"],
                                               reference=claims["setting"] + " " + claims["reference"]), "value")
    return claims
