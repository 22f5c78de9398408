"""The BLiMP supplement of the BabyLM pipeline: one JSON-lines file per task (its stem), a table column
per task (the paper's Table 7)."""
from __future__ import annotations

from pathlib import Path

from dwml.suites.registry import MinimalPair, Suite, files, read_utf8, records, register, text_field

# The paper's Table 7 columns (one per supplement file).
SUPPLEMENT_COLUMNS = ["hypernym", "qa_congruence_easy", "qa_congruence_tricky", "subject_aux_inversion", "turn_taking"]


def load_supplement(folder: str | Path) -> list[MinimalPair]:
    """The BLiMP supplement: no ``UID`` (the file's stem is the task), per-file extra fields that we keep
    out of the pair, and dialogue turns separated by ``\\n`` inside a sentence (scored as written). The
    pair id is the record's place in its file; a file with no pairs is an error naming it."""
    pairs = []
    for path in files(folder, "BLiMP supplement"):
        for k, (lineno, rec) in enumerate(records(read_utf8(path), str(path))):
            pairs.append(MinimalPair(
                suite="supplement", task=path.stem, pair_id=k,
                good=text_field(rec, "sentence_good", str(path), lineno),
                bad=text_field(rec, "sentence_bad", str(path), lineno), phenomenon=path.stem))
    return pairs


SUITE = register(Suite(
    name="supplement", title="BLiMP supplement per task (Table 7, %)", folder="supplement_filtered",
    load=load_supplement, grouping="task", columns=tuple(SUPPLEMENT_COLUMNS), table="table_supplement_tasks",
    figure_table="table7_supplement", paper_table="Table 7", paper_benchmark="blimp_supplement"))
