"""BLiMP (Warstadt et al. 2020), as filtered by the BabyLM 2024 organisers: one JSON-lines file per
paradigm; a table column per phenomenon (the paper's Table 6)."""
from __future__ import annotations

from pathlib import Path

from dwml.suites.registry import (MinimalPair, Suite, EvalDataError, UniqueIds, files, read_utf8, records,
                                  register, text_field)

# BLiMP's ``linguistics_term`` -> the paper's Table 6 column. BLiMP files its two animacy paradigms
# (animate_subject_passive/trans) under 's-selection' but its paper counts them in argument structure.
PHENOMENA = {
    "anaphor_agreement": "AA", "argument_structure": "AS", "s-selection": "AS", "binding": "B",
    "control_raising": "CR", "determiner_noun_agreement": "DNA", "ellipsis": "E",
    "filler_gap_dependency": "FG", "filler_gap": "FG", "irregular_forms": "IF", "island_effects": "IFS",
    "npi_licensing": "NPI", "quantifiers": "Q", "subject_verb_agreement": "SVA",
}
PHENOMENON_COLUMNS = ["AA", "AS", "B", "CR", "DNA", "E", "FG", "IF", "IFS", "NPI", "Q", "SVA"]


def load_blimp(folder: str | Path, suite: str = "blimp") -> list[MinimalPair]:
    """BLiMP paradigm files (``sentence_good``, ``sentence_bad``, ``UID``, ``field``, ``linguistics_term``,
    ``pair_id`` or ``pairID``), one file per paradigm; also the synthetic corpus's ``pairs/`` folder. A
    (paradigm, pair_id) that repeats, or a file with no pairs, is an error naming the file and line."""
    pairs, ids = [], UniqueIds("BLiMP")
    for path in files(folder, "BLiMP"):
        for lineno, rec in records(read_utf8(path), str(path)):
            uid = text_field(rec, "UID", str(path), lineno)
            pid = rec.get("pair_id", rec.get("pairID"))
            if pid is None:
                raise EvalDataError(f"{path}:{lineno}: no 'pair_id' (or 'pairID') field")
            try:
                pid = int(pid)
            except (TypeError, ValueError):
                raise EvalDataError(f"{path}:{lineno}: pair_id {pid!r} is not an integer") from None
            pairs.append(MinimalPair(
                suite=suite, task=uid, pair_id=pid,
                good=text_field(rec, "sentence_good", str(path), lineno),
                bad=text_field(rec, "sentence_bad", str(path), lineno),
                phenomenon=text_field(rec, "linguistics_term", str(path), lineno), field=str(rec.get("field", ""))))
            ids.check(uid, pid, str(path), lineno)  # after the fields: a malformed line is named as such first
    return pairs


def phenomenon_groups(frame):
    """The Table 6 column of each row (its ``phenomenon`` through :data:`PHENOMENA`); a term the paper
    does not name keeps its own (e.g. a new synthetic paradigm)."""
    return frame["phenomenon"].map(PHENOMENA).fillna(frame["phenomenon"])


SUITE = register(Suite(
    name="blimp", title="BLiMP per phenomenon (Table 6 columns, %)", folder="blimp_filtered", load=load_blimp,
    grouping="phenomenon", group=phenomenon_groups, columns=tuple(PHENOMENON_COLUMNS),
    table="table_blimp_phenomena", figure_table="table6_blimp_phenomena", paper_table="Table 6",
    paper_benchmark="blimp_filtered"))
