"""EWoK (Elements of World Knowledge), as filtered by BabyLM: read from its password-protected zip in
memory (its terms forbid plain-text copies); a table column per domain (the paper's Table 8)."""
from __future__ import annotations

import zipfile
from pathlib import Path

from dwml.suites.registry import EvalDataError, MinimalPair, Suite, files, read_utf8, records, register, text_field

# EWoK domain -> the paper's Table 8 acronym. The paper's list has ten and gives SR to social relations;
# the eleventh domain, spatial relations, gets 'SpR' here so no two columns share a name.
EWOK_DOMAINS = {
    "social-interactions": "SI", "social-properties": "SP", "social-relations": "SR",
    "physical-interactions": "PI", "physical-dynamics": "PD", "physical-relations": "PR",
    "material-dynamics": "MD", "material-properties": "MP", "agent-properties": "AP",
    "quantitative-properties": "QP", "spatial-relations": "SpR",
}
EWOK_COLUMNS = ["SI", "SP", "SR", "PI", "PD", "PR", "MD", "MP", "AP", "QP", "SpR"]


def load_ewok(source: str | Path, password: bytes = b"ewok") -> list[MinimalPair]:
    """EWoK: the item is right when ``Target1`` scores higher than ``Target2`` after ``Context1``.

    ``source`` is the BabyLM zip (members ``ewok_filtered/<domain>.jsonl``, read in memory with the
    password; nothing is extracted) or a folder the caller unzipped into a temporary directory. A member
    or file with no items is an error naming it."""
    source = Path(source)
    texts: list[tuple[str, str]] = []
    if source.is_dir():
        texts = [(str(p), read_utf8(p)) for p in files(source, "EWoK")]
    elif source.is_file():
        try:
            with zipfile.ZipFile(source) as z:
                for name in sorted(z.namelist()):
                    if name.endswith(".jsonl"):
                        texts.append((f"{source}!{name}", z.read(name, pwd=password).decode("utf-8")))
        except (zipfile.BadZipFile, RuntimeError) as e:  # RuntimeError: wrong or missing password
            raise EvalDataError(f"{source}: cannot read the EWoK zip ({e})") from None
        if not texts:
            raise EvalDataError(f"{source}: the zip holds no *.jsonl members")
    else:
        raise EvalDataError(f"EWoK source {source} does not exist")
    pairs = []
    for where, text in texts:
        for k, (lineno, rec) in enumerate(records(text, where)):
            domain = text_field(rec, "Domain", where, lineno)
            pairs.append(MinimalPair(
                suite="ewok", task=domain, pair_id=k,
                good=text_field(rec, "Target1", where, lineno), bad=text_field(rec, "Target2", where, lineno),
                prefix=text_field(rec, "Context1", where, lineno), phenomenon=domain))
    return pairs


def locate(root: Path) -> Path:
    """The zip under the data root, or an ``ewok_filtered/`` folder when only that is there."""
    z = root / "ewok_filtered.zip"
    return z if z.exists() or not (root / "ewok_filtered").is_dir() else root / "ewok_filtered"


def domain_groups(frame):
    """The Table 8 acronym of each row's domain (an unknown domain keeps its name)."""
    return frame["task"].map(EWOK_DOMAINS).fillna(frame["task"])


SUITE = register(Suite(
    name="ewok", title="EWoK per domain (Table 8, %)", folder="ewok_filtered.zip", load=load_ewok,
    grouping="domain", group=domain_groups, columns=tuple(EWOK_COLUMNS), table="table_ewok_domains",
    figure_table="table8_ewok", paper_table="Table 8", paper_benchmark="ewok_filtered", locate=locate))
