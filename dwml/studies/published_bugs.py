"""What each bug of the published code costs (notebook 03's last table): the method trained with each bug
switched on (``dwml.config``'s ``published_*`` fields) on the same seeds and peers, and its difference from
the corrected method in points, over pairs and over seeds."""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import pandas as pd

from dwml.compare import best_peer, bootstrap_on_pairs, per_seed
from dwml.config import Config
from dwml.data import prepare_corpus
from dwml.methods import method_class
from dwml.runs import train_run
from dwml.scoring import score_run
from dwml.stats import t_interval

BUGS = {
    "token_file": {"data": {"published_token_file": True, "packing": "blocks"}},
    "hypergradient": {"train": {"published_hypergradient": True}},
    "kl": {"train": {"published_kl": True, "chunk_size": 1}},
}
"""Each bug of the published code as the config fields that switch it on (``dwml.config``). The token
file's stream has no utterance boundaries left, so its runs cut random blocks (``packing='blocks'``); the
table then measures it against the corrected method on blocks too."""


def bug_settings(sections: Mapping, bugs: Sequence[str] = tuple(BUGS)) -> dict[str, dict]:
    """Setting name -> the profile's sections with those bugs on: 'corrected', each bug alone, 'all' (when
    more than one), and 'corrected_blocks' (the reference of the token-file bug) when the profile does not
    already cut blocks."""
    unknown = [b for b in bugs if b not in BUGS]
    if unknown:
        raise ValueError(f"unknown published bug(s) {unknown}; known: {sorted(BUGS)}")

    def with_bugs(names: Sequence[str]) -> dict:
        out = {k: dict(v) for k, v in sections.items()}
        for b in names:
            for section, fields in BUGS[b].items():
                out.setdefault(section, {}).update(fields)
        return out

    settings = {"corrected": with_bugs([])}
    if "token_file" in bugs and sections.get("data", {}).get("packing", "blocks") != "blocks":
        settings["corrected_blocks"] = with_bugs([])
        settings["corrected_blocks"].setdefault("data", {})["packing"] = "blocks"
    settings.update({b: with_bugs([b]) for b in bugs})
    if len(bugs) > 1:
        settings["all"] = with_bugs(bugs)
    return settings


def bug_reference(setting: str, settings: Sequence[str]) -> str:
    """The setting a bug's row is paired with: 'corrected_blocks' for runs that cut blocks (the token file,
    'all') when it exists, else 'corrected'."""
    if setting in ("token_file", "all") and "corrected_blocks" in settings:
        return "corrected_blocks"
    return "corrected"


def bug_runs(sections: Mapping, archs: Sequence, meta: Mapping, seeds: Sequence[int], run_root: str | Path,
                       pairs: Mapping, eval_cfg=None, method: str = "dwml", bugs: Sequence[str] = tuple(BUGS),
                       progress: bool = True, train_overrides: Mapping | None = None,
                       blocks_overrides: Mapping | None = None) -> pd.DataFrame:
    """Train ``method`` in every setting of :func:`bug_settings` on the same seeds and peers
    (run folders ``<method>_bug-<setting>_seed<seed>``, and the profile's own ``<method>_seed<seed>`` for
    'corrected'; reused when finished) and score every peer on
    ``pairs``; the per-pair scores with a ``setting`` column.

    ``train_overrides``: a budget of the table's own for every setting (fewer steps, say); 'corrected' is
    then trained under them too (``<method>_bug-corrected_seed<seed>``), not taken from the profile's run.
    ``blocks_overrides``: further overrides for the settings that cut random blocks (a batch of fewer
    rows, so that a step of blocks sees about as many tokens as a step of utterances)."""
    if method_class(method).uses_teacher:
        raise ValueError("bug_runs: methods with a teacher are not supported (no teacher run here)")
    frames = []
    for setting, secs in bug_settings(sections, bugs).items():
        prep = prepare_corpus(Config.from_dict(data=secs.get("data", {})).data, progress=progress)
        overrides = dict(train_overrides or {})
        if secs.get("data", {}).get("packing") == "blocks":
            overrides.update(blocks_overrides or {})
        for seed in seeds:
            # 'corrected' is the profile's own run of the method (the one 02 / 03 train), reused when finished,
            # unless the table has a budget of its own
            tag = "" if setting == "corrected" and not overrides else f"bug-{setting}"
            res = train_run(secs, prep, archs, meta, method, seed, run_root, tag=tag, progress=progress,
                            train_overrides=overrides or None)
            frames.append(score_run(res, pairs, eval_cfg).assign(setting=setting))
    return pd.concat(frames, ignore_index=True)


def bug_table(scores: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """"What each published bug costs": per setting and suite, the best peer's macro accuracy (best within
    each seed, seeds pooled), and its difference from its reference (:func:`bug_reference`) in points
    with a 95% paired bootstrap interval (the same pairs resampled for both, within each seed's task:
    ``dwml.stats.paired_macro_bootstrap``) and, with two or more seeds, a paired t-interval over seeds.
    ``scores``: :func:`bug_runs`'s frame."""
    pick = best_peer(per_seed(scores, keys=("setting", "peer")), by=("setting",))[["setting", "seed", "peer"]]
    chosen = scores.merge(pick.drop_duplicates(), on=["setting", "seed", "peer"])
    settings = list(dict.fromkeys(chosen["setting"]))
    if "corrected" not in settings:
        raise ValueError(f"bug_table: no 'corrected' runs among the settings {settings}")
    seeded = per_seed(chosen, keys=("setting",))
    rows = []
    for setting in settings:
        ref = bug_reference(setting, settings)
        for suite in chosen.loc[chosen["setting"] == setting, "suite"].unique():
            mine = chosen[(chosen["setting"] == setting) & (chosen["suite"] == suite)]
            acc = seeded[(seeded["setting"] == setting) & (seeded["suite"] == suite)]["accuracy"]
            row = {"setting": setting, "suite": suite, "accuracy": float(acc.mean()), "seeds": int(acc.size),
                   "reference": ref if setting != ref else ""}
            if setting not in ("corrected", ref):
                other = chosen[(chosen["setting"] == ref) & (chosen["suite"] == suite)]
                _, lo, hi = bootstrap_on_pairs(mine, other, n_boot, seed,
                                             f"bug_table: setting {setting!r} and {ref!r}")
                ref_acc = seeded[(seeded["setting"] == ref) & (seeded["suite"] == suite)].set_index("seed")["accuracy"]
                diffs = seeded[(seeded["setting"] == setting) & (seeded["suite"] == suite)].set_index("seed")["accuracy"] - ref_acc
                m, t_lo, t_hi = t_interval(diffs.dropna())
                row.update({"difference": m, "ci_low": lo, "ci_high": hi, "seed_ci_low": t_lo,
                            "seed_ci_high": t_hi, "differs": bool(lo > 0 or hi < 0)})
            rows.append(row)
    return pd.DataFrame(rows)
