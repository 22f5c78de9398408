"""Zorro (Huebner et al. 2021, the BabyBERTa paper): 23 grammatical paradigms in the vocabulary of
child-directed speech, read from ``zorro/`` under the data root (``REFERENCE.md`` there says where it
comes from), with the authors' published per-paradigm results to stand beside ours.

Format: ``sentences/<paradigm>.txt``, one sentence a line; line 2k-1 (odd, counting from 1) is the
ungrammatical member of pair k, line 2k the grammatical one. The paradigm is the file's stem, the
phenomenon the part of it before the first hyphen. A table column per paradigm.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from dwml.suites.registry import EvalDataError, MinimalPair, Suite, files, read_utf8, register

REFERENCE_CSV = "reference_results.csv"
PLL_SCORING = "mlm"  # the csv's name for pseudo-log-likelihood scoring (not the training method 'mlm')


def sentences_folder(folder: str | Path) -> Path:
    """The folder of the ``*.txt`` files: ``folder/sentences`` when there is one, else ``folder``."""
    folder = Path(folder)
    return folder / "sentences" if (folder / "sentences").is_dir() else folder


def load_zorro(folder: str | Path) -> list[MinimalPair]:
    """Every paradigm file of a Zorro folder (the folder holding ``sentences/``, or ``sentences/`` itself):
    pair k (from 0) = lines 2k+1 (bad) and 2k+2 (good). An empty file, a blank line or an odd number of
    lines is an error naming the file and line."""
    pairs = []
    for path in files(sentences_folder(folder), "Zorro", "*.txt"):
        lines = read_utf8(path).split("\n")
        if lines and lines[-1] == "":
            lines.pop()  # the final newline
        if not lines:
            raise EvalDataError(f"{path}: empty: the file holds no pairs")
        for i, line in enumerate(lines, start=1):
            if not line.strip():
                raise EvalDataError(f"{path}:{i}: blank line; Zorro files alternate bad (odd) and good (even) lines")
        if len(lines) % 2:
            raise EvalDataError(f"{path}:{len(lines)}: an odd number of lines ({len(lines)}): the last bad "
                                f"sentence has no good partner")
        phenomenon = path.stem.split("-", 1)[0]
        for k in range(len(lines) // 2):
            pairs.append(MinimalPair(suite="zorro", task=path.stem, pair_id=k, good=lines[2 * k + 1].strip(),
                                     bad=lines[2 * k].strip(), phenomenon=phenomenon))
    return pairs


def write_zorro(pairs: Sequence[MinimalPair], folder: str | Path) -> Path:
    """``pairs`` in Zorro's format under ``folder/sentences/<task>.txt`` (bad line, then good line, in
    ``pair_id`` order); returns ``folder``. Any suite's pairs become a Zorro-shaped stand-in this way."""
    from dwml.io import atomic_write_text

    folder = Path(folder)
    by_task: dict[str, list[MinimalPair]] = {}
    for p in pairs:
        by_task.setdefault(p.task, []).append(p)
    for task, items in by_task.items():
        text = "".join(f"{p.bad}\n{p.good}\n" for p in sorted(items, key=lambda p: p.pair_id))
        atomic_write_text(folder / "sentences" / f"{task}.txt", text)
    return folder


def reference(folder: str | Path):
    """The authors' published accuracies (%) from ``reference_results.csv`` beside the sentences, scored
    with ``mlm`` (pseudo-log-likelihood, summed: our convention), or None when the file is absent. Rows:
    BabyBERTa on AO-CHILDES (mean, min and max over its seeds, per paradigm), RoBERTa-base trained on
    AO-CHILDES (mean of its runs), RoBERTa-base as released (30B words); columns: the paradigms and
    ``Avg.`` (the csv's ``overall``: the mean of the 23 paradigms)."""
    import pandas as pd

    folder = Path(folder)
    path = next((p for p in (folder / REFERENCE_CSV, folder.parent / REFERENCE_CSV) if p.is_file()), None)
    if path is None:
        return None
    df = pd.read_csv(path)
    need = {"model", "training_corpus", "scoring", "rep", "overall"}
    if not need <= set(df.columns):
        raise EvalDataError(f"{path}: columns {sorted(need - set(df.columns))} missing")
    df = df[df["scoring"] == PLL_SCORING].rename(columns={"overall": "Avg."})
    values = [c for c in df.columns if c not in ("model", "training_corpus", "scoring", "rep")]

    def part(model, corpus):
        rows = df[(df["model"] == model) & (df["training_corpus"] == corpus)][values]
        if rows.empty:
            raise EvalDataError(f"{path}: no 'mlm' row of {model} trained on {corpus}")
        return rows

    baby, ao, base = part("BabyBERTa", "AO-CHILDES"), part("RoBERTa-base", "AO-CHILDES"), part("RoBERTa-base", "Liu2019")
    n = len(baby)
    out = pd.DataFrame({f"BabyBERTa, AO-CHILDES (mean of {n} seeds)": baby.mean(),
                        f"BabyBERTa, AO-CHILDES (min of {n} seeds)": baby.min(),
                        f"BabyBERTa, AO-CHILDES (max of {n} seeds)": baby.max(),
                        f"RoBERTa-base, AO-CHILDES (mean of {len(ao)} runs)": ao.mean(),
                        "RoBERTa-base, 30B words (Liu et al. 2019)": base.mean()}).T
    out.index.name = "reference"
    return out


def paradigm_groups(frame):
    """A table column per paradigm (the file's stem)."""
    return frame["task"]


SUITE = register(Suite(
    name="zorro", title="Zorro per paradigm (%), beside the published results", folder="zorro", load=load_zorro,
    grouping="task", group=paradigm_groups, table="table_zorro_paradigms", figure_table="table_zorro_paradigms",
    reference=reference, write=write_zorro))
