"""The suite registry (dwml.suites): a suite registered here in one line is scored through the command line;
Zorro's loader, writer and published results on small files made here (and on the real folder, marked
``data``); ``--suite-dir`` and the sentences in ``pairs.csv``; suite files with repeated pair ids or no
pairs refused; every join on pairs one-to-one; the Zorro tables of the notebooks."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import saved_tiny_roberta
from dwml import compare, reports, scoring, suites
from dwml.evaluate import __main__ as evaluate_cli
from dwml.studies import baselines, published_bugs
from dwml.suites import EvalDataError, MinimalPair, Suite

WORDS = ["the", "a", "dog", "dogs", "cat", "cats", "sees", "see", "runs", "run", "bird", "birds", "sings", "sing",
         "she", "likes", "park", "to", "in", "is", "here", "they", "we", "saw", "them", "."]
LINES = [" ".join(WORDS[i:i + 5]) for i in range(len(WORDS) - 5)] * 10

ZORRO = {  # paradigm -> [(bad, good)]
    "agreement_subject_verb-in_simple_question": [("where is the dogs ?", "where are the dogs ?"),
                                                  ("is the cats here ?", "are the cats here ?")],
    "filler-gap-wh_question_object": [("what did she see the cat ?", "what did she see ?")],
}


def write_zorro_files(folder: Path, items=ZORRO, sentences=True) -> Path:
    """Zorro's layout by hand (not with dwml's writer): odd lines bad, even lines good."""
    where = folder / "sentences" if sentences else folder
    where.mkdir(parents=True)
    for name, pairs in items.items():
        (where / f"{name}.txt").write_text("".join(f"{bad}\n{good}\n" for bad, good in pairs))
    return folder


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny saved RoBERTa (our byte-level BPE tokenizer), scored by the command line."""
    return saved_tiny_roberta(tmp_path_factory.mktemp("models") / "tiny-roberta", LINES + ["where are what did ? i"] * 5)


def expected_scores(model_dir, pairs):
    """PLL of every good then every bad sentence straight from ``pll_scores`` (the independent computation)."""
    from dwml.evaluate import load_masked_lm, pll_scores

    model, tok = load_masked_lm(model_dir)
    prefixes = [p.prefix for p in pairs] * 2 if any(p.prefix for p in pairs) else None
    return pll_scores(model, tok, [p.good for p in pairs] + [p.bad for p in pairs], prefixes, progress=False)


# ----------------------------------------------------------------------------------------------- registry

def test_registry_lists_every_suite_with_its_folder_and_grouping(tmp_path):
    assert suites.names() == ["blimp", "supplement", "ewok", "zorro", "synthetic"]
    assert {n: suites.get(n).grouping for n in suites.names()} == {
        "blimp": "phenomenon", "supplement": "task", "ewok": "domain", "zorro": "task", "synthetic": "phenomenon"}
    assert suites.get("blimp").path(tmp_path) == tmp_path / "blimp_filtered"
    assert suites.get("zorro").path(tmp_path) == tmp_path / "zorro"
    assert suites.get("ewok").path(tmp_path) == tmp_path / "ewok_filtered.zip"
    (tmp_path / "ewok_filtered").mkdir()  # only an unzipped folder there: that is read
    assert suites.get("ewok").path(tmp_path) == tmp_path / "ewok_filtered"
    assert baselines.GROUP_TABLES == {"blimp": ("table6_blimp_phenomena", "Table 6"),
                                        "supplement": ("table7_supplement", "Table 7"),
                                        "ewok": ("table8_ewok", "Table 8")}
    with pytest.raises(EvalDataError, match="unknown suite 'glue'; known: blimp, supplement"):
        suites.get("glue")
    with pytest.raises(ValueError, match="'blimp' is registered twice"):
        suites.register(Suite(name="blimp", title="x", folder="x", load=list, grouping="task"))


def _suite_name_tests(path: Path) -> list[str]:
    """Each place in ``path`` that compares a value with a suite's name (==, !=, in, not in, .isin, a dict
    keyed by suite names), 'synthetic' left out (it is also the corpus's name)."""
    import ast

    names = set(suites.names()) - {"synthetic"}
    tree = ast.parse(path.read_text())
    hits = []

    def named(node) -> bool:
        if isinstance(node, ast.Constant):
            return node.value in names
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(named(e) for e in node.elts)

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(named(x) for x in [node.left, *node.comparators]):
            hits.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "isin" \
                and any(named(a) for a in node.args):
            hits.append(f"{path.name}:{node.lineno}: {ast.unparse(node)}")
        elif isinstance(node, ast.Dict) and sum(named(k) for k in node.keys if k is not None) >= 2:
            hits.append(f"{path.name}:{node.lineno}: a dict keyed by suite names")
    return hits


def test_no_code_outside_the_registry_lists_or_compares_suite_names(tmp_path):
    from conftest import ROOT

    files = [p for p in sorted((ROOT / "dwml").rglob("*.py")) if p.parent.name != "suites"]
    files += sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
    hits = [h for p in files for h in _suite_name_tests(p)]
    assert hits == [], "read the suite's registry entry (dwml.suites.get) instead:\n" + "\n".join(hits)
    bad = tmp_path / "bad.py"  # the check finds what it looks for
    bad.write_text('if suite == "ewok":\n    pass\nx = df["suite"].isin(["zorro"])\nd = {"blimp": 1, "ewok": 2}\n')
    assert len(_suite_name_tests(bad)) == 3


def load_tsv(folder):
    """A new suite's loader for the test: ``good<TAB>bad`` lines, one file per task."""
    return [MinimalPair(suite="tsvpairs", task=p.stem, pair_id=i, good=g, bad=b, phenomenon=p.stem)
            for p in sorted(Path(folder).glob("*.tsv"))
            for i, (g, b) in enumerate(line.split("\t") for line in p.read_text().splitlines())]


@pytest.fixture
def tsv_suite():
    suites.register(Suite(name="tsvpairs", title="TSV pairs (%)", folder="tsvpairs", load=load_tsv, grouping="task"))
    yield suites.get("tsvpairs")
    del suites.SUITES["tsvpairs"]


def test_a_suite_registered_in_one_line_is_scored_by_the_command_line(tsv_suite, model_dir, tmp_path, capsys):
    data = tmp_path / "data"
    (data / "tsvpairs").mkdir(parents=True)
    (data / "tsvpairs" / "agr.tsv").write_text("the dog runs .\tthe dog run .\nthe dogs run .\tthe dogs runs .\n")
    (data / "tsvpairs" / "det.tsv").write_text("she likes the cats .\tshe likes a cats .\n")
    out = tmp_path / "out"
    rc = evaluate_cli.main([str(model_dir), "--suites", "tsvpairs", "--data", str(data), "--out", str(out),
                            "--no-progress", "--bootstrap", "20"])
    assert rc == 0, capsys.readouterr().err
    df = pd.read_csv(out / "tiny-roberta" / "pairs.csv")
    pairs = load_tsv(data / "tsvpairs")
    exp = expected_scores(model_dir, pairs)
    assert list(df["good"]) == [p.good for p in pairs] and list(df["bad"]) == [p.bad for p in pairs]
    assert np.abs(df["score_good"].to_numpy() - exp[:3]).max() < 1e-5
    assert np.abs(df["score_bad"].to_numpy() - exp[3:]).max() < 1e-5
    table = pd.read_csv(out / "tiny-roberta" / "table_tsvpairs.csv")
    assert list(table["group"]) == ["agr", "det"]
    want = 100 * df.groupby("task")["correct"].mean()
    assert table.set_index("group")["accuracy"].to_dict() == pytest.approx(want.to_dict())
    assert "TSV pairs (%)" in (out / "tiny-roberta" / "table_tsvpairs.md").read_text()
    assert "tsvpairs" in evaluate_cli.build_parser().format_help()


# ----------------------------------------------------------------------------------------------- Zorro

def test_zorro_loader_reads_odd_lines_as_bad_and_even_as_good(tmp_path):
    for sentences in (True, False):
        folder = write_zorro_files(tmp_path / f"z{sentences}", sentences=sentences)
        pairs = suites.load("zorro", folder)
        assert [(p.task, p.pair_id, p.bad, p.good) for p in pairs] == [
            (name, k, bad, good) for name in sorted(ZORRO) for k, (bad, good) in enumerate(ZORRO[name])]
        assert {p.task: p.phenomenon for p in pairs} == {
            "agreement_subject_verb-in_simple_question": "agreement_subject_verb",
            "filler-gap-wh_question_object": "filler"}  # the part before the first hyphen
        assert {p.suite for p in pairs} == {"zorro"} and all(p.prefix is None for p in pairs)
    # the writer's files load back to the same pairs
    again = suites.load("zorro", suites.write_zorro(pairs, tmp_path / "copy"))
    assert again == pairs
    assert (tmp_path / "copy" / "sentences" / "filler-gap-wh_question_object.txt").read_text() == \
        "what did she see the cat ?\nwhat did she see ?\n"


def test_zorro_loader_errors_name_the_file_and_line(tmp_path):
    folder = tmp_path / "z" / "sentences"
    folder.mkdir(parents=True)
    bad = folder / "binding-principle_a.txt"
    bad.write_text("a\nb\nc\n")
    with pytest.raises(EvalDataError, match=r"binding-principle_a\.txt:3: an odd number of lines"):
        suites.load("zorro", folder.parent)
    bad.write_text("a\n\nc\nd\n")
    with pytest.raises(EvalDataError, match=r"binding-principle_a\.txt:2: blank line"):
        suites.load("zorro", folder.parent)
    bad.write_text("")
    with pytest.raises(EvalDataError, match=r"binding-principle_a\.txt: empty"):
        suites.load("zorro", folder.parent)
    bad.unlink()
    with pytest.raises(EvalDataError, match=r"holds no \*\.txt files"):
        suites.load("zorro", folder.parent)
    with pytest.raises(EvalDataError, match="does not exist"):
        suites.load("zorro", tmp_path / "nowhere")


REF_COLUMNS = ["model", "training_corpus", "scoring", "rep", "p-one", "p-two", "overall"]
REF_ROWS = [["BabyBERTa", "AO-CHILDES", "mlm", 0, 70.0, 80.0, 75.0],
            ["BabyBERTa", "AO-CHILDES", "mlm", 1, 60.0, 90.0, 75.0],
            ["BabyBERTa", "AO-CHILDES", "mlm", 2, 65.0, 70.0, 67.5],
            ["BabyBERTa", "AO-CHILDES", "holistic", 0, 10.0, 10.0, 10.0],
            ["RoBERTa-base", "AO-CHILDES", "mlm", 0, 50.0, 60.0, 55.0],
            ["RoBERTa-base", "AO-CHILDES", "mlm", 0, 52.0, 64.0, 58.0],
            ["RoBERTa-base", "Liu2019", "mlm", 0, 95.0, 85.0, 90.0],
            ["RoBERTa-base", "Warstadt2020", "mlm", 0, 1.0, 1.0, 1.0]]


def write_reference(folder: Path, rows=REF_ROWS):
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "reference_results.csv", "w", newline="") as f:
        csv.writer(f).writerows([REF_COLUMNS] + rows)


def test_zorro_reference_rows_are_mlm_means_and_ranges_over_seeds(tmp_path):
    assert suites.get("zorro").reference(tmp_path) is None  # no csv: nothing to stand beside
    write_reference(tmp_path)
    ref = suites.get("zorro").reference(tmp_path / "sentences")  # also found from the sentences folder
    assert ref.loc["BabyBERTa, AO-CHILDES (mean of 3 seeds)"].to_dict() == pytest.approx(
        {"p-one": 65.0, "p-two": 80.0, "Avg.": 72.5})  # the holistic row left out
    assert ref.loc["BabyBERTa, AO-CHILDES (min of 3 seeds)"].to_dict() == {"p-one": 60.0, "p-two": 70.0, "Avg.": 67.5}
    assert ref.loc["BabyBERTa, AO-CHILDES (max of 3 seeds)"].to_dict() == {"p-one": 70.0, "p-two": 90.0, "Avg.": 75.0}
    assert ref.loc["RoBERTa-base, AO-CHILDES (mean of 2 runs)"].to_dict() == {"p-one": 51.0, "p-two": 62.0, "Avg.": 56.5}
    assert ref.loc["RoBERTa-base, 30B words (Liu et al. 2019)", "Avg."] == 90.0
    assert len(ref) == 5  # Warstadt et al.'s 10M-word RoBERTa is not one of the issue's references
    write_reference(tmp_path, [r for r in REF_ROWS if r[1] != "Liu2019"])
    with pytest.raises(EvalDataError, match="no 'mlm' row of RoBERTa-base trained on Liu2019"):
        suites.get("zorro").reference(tmp_path)


def test_zorro_through_the_command_line_with_suite_dir_and_the_reference(model_dir, tmp_path, capsys):
    folder = write_zorro_files(tmp_path / "myzorro", {"p-one": ZORRO["agreement_subject_verb-in_simple_question"],
                                                      "p-two": ZORRO["filler-gap-wh_question_object"]})
    write_reference(folder)
    out = tmp_path / "out"
    rc = evaluate_cli.main([str(model_dir), "--suites", "zorro", "--suite-dir", f"zorro={folder}", "--out", str(out),
                            "--data", str(tmp_path), "--no-progress", "--bootstrap", "20"])
    assert rc == 0, capsys.readouterr().err
    df = pd.read_csv(out / "tiny-roberta" / "pairs.csv", keep_default_na=False)
    pairs = suites.load("zorro", folder)
    assert list(df["bad"]) == [p.bad for p in pairs] and list(df["good"]) == [p.good for p in pairs]
    assert set(df["prefix"]) == {""}
    exp = expected_scores(model_dir, pairs)
    assert np.abs(df["score_good"].to_numpy() - exp[:3]).max() < 1e-5
    table = pd.read_csv(out / "tiny-roberta" / "table_zorro_paradigms.csv").set_index("group")
    assert list(table.index) == ["p-one", "p-two", "Avg."]
    assert table.loc["p-one", "BabyBERTa, AO-CHILDES (mean of 3 seeds)"] == pytest.approx(65.0)
    assert table.loc["Avg.", "RoBERTa-base, 30B words (Liu et al. 2019)"] == 90.0
    macro = 100 * df.groupby("task")["correct"].mean().mean()
    assert table.loc["Avg.", "accuracy"] == pytest.approx(macro)
    summary = json.loads((out / "tiny-roberta" / "summary.json").read_text())
    assert summary["data"]["zorro"] == str(folder)


def test_pairs_csv_carries_the_prefix(model_dir, tmp_path, capsys):
    ewok = tmp_path / "ewok_filtered"
    ewok.mkdir()
    (ewok / "social-relations.jsonl").write_text(json.dumps(
        {"Domain": "social-relations", "Context1": "the dog sees the cat .", "Target1": "the cat runs .",
         "Target2": "the cat sings ."}) + "\n")
    out = tmp_path / "out"
    assert evaluate_cli.main([str(model_dir), "--suites", "ewok", "--suite-dir", f"ewok={ewok}", "--out", str(out),
                              "--no-progress", "--bootstrap", "10"]) == 0, capsys.readouterr().err
    row = pd.read_csv(out / "tiny-roberta" / "pairs.csv").iloc[0]
    assert (row["prefix"], row["good"], row["bad"]) == ("the dog sees the cat .", "the cat runs .", "the cat sings .")


def test_suite_dir_errors_name_the_option(model_dir, tmp_path, capsys):
    def err(*argv):
        assert evaluate_cli.main([str(model_dir), "--out", str(tmp_path / "o"), "--no-progress", *argv]) == 2
        return capsys.readouterr().err

    e = err("--suites", "zorro", "--suite-dir", "zorrro=" + str(tmp_path))
    assert "--suite-dir" in e and "unknown suite 'zorrro'" in e and "zorro" in e
    e = err("--suites", "zorro", "--suite-dir", f"zorro={tmp_path / 'missing'}")
    assert "--suite-dir" in e and str(tmp_path / "missing") in e and "does not exist" in e
    e = err("--suites", "zorro", "--suite-dir", "zorro")
    assert "--suite-dir 'zorro': expected NAME=PATH" in e


@pytest.mark.data
def test_real_zorro_folder(shared_data):
    folder = suites.get("zorro").path(shared_data)
    if not folder.is_dir():
        pytest.skip(f"{folder} not found: Zorro is not in this data folder")
    pairs = suites.load("zorro", folder)
    by_task = pd.Series([p.task for p in pairs]).value_counts()
    assert len(by_task) == 23 and (by_task == 2000).all()
    assert len({p.phenomenon for p in pairs}) == 13
    first = (folder / "sentences" / f"{pairs[0].task}.txt").read_text().split("\n")[:2]
    assert (pairs[0].bad, pairs[0].good) == (first[0], first[1])
    ref = suites.get("zorro").reference(folder)
    # the summary REFERENCE.md gives (mean over rows [min, max])
    assert ref.loc["BabyBERTa, AO-CHILDES (mean of 10 seeds)", "Avg."] == pytest.approx(77.97, abs=0.005)
    assert ref.loc["BabyBERTa, AO-CHILDES (min of 10 seeds)", "Avg."] == pytest.approx(76.72)
    assert ref.loc["BabyBERTa, AO-CHILDES (max of 10 seeds)", "Avg."] == pytest.approx(79.09)
    assert ref.loc["RoBERTa-base, AO-CHILDES (mean of 2 runs)", "Avg."] == pytest.approx(72.44, abs=0.005)
    assert ref.loc["RoBERTa-base, 30B words (Liu et al. 2019)", "Avg."] == pytest.approx(90.22)
    assert set(ref.columns) - {"Avg."} == set(by_task.index)


# ----------------------------------------------------------------------------------------------- bad files

def blimp_line(uid, pid, good="a b", bad="b a"):
    return json.dumps({"sentence_good": good, "sentence_bad": bad, "UID": uid, "linguistics_term": "t",
                       "field": "f", "pair_id": pid})


def test_repeated_pair_ids_are_refused_naming_both_places(tmp_path):
    folder = tmp_path / "blimp"
    folder.mkdir()
    (folder / "u.jsonl").write_text("\n".join([blimp_line("u", 0), blimp_line("u", 1), blimp_line("u", 0)]) + "\n")
    with pytest.raises(EvalDataError, match=r"u\.jsonl:3: BLiMP pair_id 0 of task 'u' repeats \(first at .*u\.jsonl:1\)"):
        suites.load("blimp", folder)
    # across files: the same paradigm in two files
    (folder / "u.jsonl").write_text(blimp_line("u", 0) + "\n")
    (folder / "v.jsonl").write_text(blimp_line("u", 5) + "\n" + blimp_line("u", 0) + "\n")
    with pytest.raises(EvalDataError, match=r"v\.jsonl:2: .* repeats \(first at .*u\.jsonl:1\)"):
        suites.load("blimp", folder)
    (folder / "v.jsonl").write_text(blimp_line("v", 0) + "\n")  # the same id in another paradigm is fine
    assert len(suites.load("blimp", folder)) == 2


@pytest.mark.parametrize("name", ["blimp", "supplement", "ewok", "synthetic"])
def test_an_empty_suite_file_is_an_error_naming_it(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    (folder / "a.jsonl").write_text(blimp_line("a", 0).replace('"a b"', '"x y"') if name != "ewok" else json.dumps(
        {"Domain": "d", "Context1": "c", "Target1": "t", "Target2": "u"}) + "\n")
    (folder / "empty.jsonl").write_text("\n\n")
    with pytest.raises(EvalDataError, match=r"empty\.jsonl: empty: the file holds no pairs"):
        suites.load(name, folder)


def test_an_empty_member_of_the_ewok_zip_is_an_error_naming_it(tmp_path):
    import zipfile

    z = tmp_path / "e.zip"
    with zipfile.ZipFile(z, "w") as zf:
        zf.writestr("ewok_filtered/d.jsonl", "")
    with pytest.raises(EvalDataError, match=r"e\.zip!ewok_filtered/d\.jsonl: empty"):
        suites.load("ewok", z)


# ----------------------------------------------------------------------------------------------- joins on pairs

def kept_scores(dup: str | None = None) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = [{"method": m, "seed": s, "peer": 1, "suite": "blimp", "task": t, "phenomenon": "binding", "pair_id": i,
             "correct": bool(rng.random() < 0.6), "tie": False}
            for m in ("mlm", "dwml") for s in (0, 1, 2) for t in ("a", "b") for i in range(30)]
    df = pd.DataFrame(rows)
    if dup:
        extra = df[(df["method"] == dup) & (df["seed"] == 1) & (df["task"] == "b") & (df["pair_id"] == 7)]
        df = pd.concat([df, extra], ignore_index=True)
    return df


def test_check_one_to_one_names_the_repeated_key():
    df = pd.DataFrame({"suite": ["s", "s", "s"], "task": ["t", "t", "u"], "pair_id": [3, 3, 3]})
    with pytest.raises(ValueError, match=r"here: the key \(suite='s', task='t', pair_id=3\) is on 2 rows"):
        reports.check_one_to_one(df, ["suite", "task", "pair_id"], "here")
    reports.check_one_to_one(df.iloc[1:], ["suite", "task", "pair_id"], "here")  # unique: no error


def test_compare_models_refuses_a_repeated_pair():
    a = kept_scores()
    a = a[(a["method"] == "mlm") & (a["seed"] == 0)]
    b = pd.concat([a, a.iloc[[4]]], ignore_index=True)
    with pytest.raises(ValueError, match=r"results_b: the key \(suite='blimp', task='a', pair_id=4\) is on 2 rows"):
        reports.compare_models(a, b)
    assert reports.compare_models(a, a)["diff"].iloc[0] == 0


@pytest.mark.parametrize("dup", ["mlm", "dwml"])
def test_bootstrap_over_pairs_refuses_a_repeated_pair(dup):
    with pytest.raises(ValueError, match=r"key \(seed=1, suite='blimp', task='b', pair_id=7\) is on 2 rows"):
        compare.bootstrap_over_pairs(kept_scores(dup), "mlm", n_boot=10)


def test_the_bug_table_refuses_a_repeated_pair():
    df = kept_scores().rename(columns={"method": "setting"}).replace({"setting": {"mlm": "corrected", "dwml": "kl"}})
    df["method"] = "dwml"
    extra = df[(df["setting"] == "kl") & (df["seed"] == 0) & (df["task"] == "a") & (df["pair_id"] == 2)]
    with pytest.raises(ValueError, match=r"setting 'kl' and 'corrected'.*key \(seed=0, suite='blimp', task='a', pair_id=2\)"):
        published_bugs.bug_table(pd.concat([df, extra], ignore_index=True), n_boot=10)
    assert "difference" in published_bugs.bug_table(df, n_boot=10).columns


def test_bootstrap_over_pairs_gives_the_interval_over_seeds_by_hand():
    from scipy import stats

    scores = kept_scores()
    d = compare.bootstrap_over_pairs(scores, "mlm", n_boot=200).set_index("method").loc["dwml"]
    per_seed = []
    for s in (0, 1, 2):
        part = scores[scores["seed"] == s]
        acc = part.groupby(["method", "task"])["correct"].mean().unstack("task").mean(axis=1)
        per_seed.append(100 * (acc["dwml"] - acc["mlm"]))
    half = stats.t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / math.sqrt(3)
    assert d["difference"] == pytest.approx(np.mean(per_seed))
    assert (d["seed_ci_low"], d["seed_ci_high"]) == pytest.approx((np.mean(per_seed) - half, np.mean(per_seed) + half))
    one = compare.bootstrap_over_pairs(scores[scores["seed"] == 0], "mlm", n_boot=50).iloc[0]
    assert np.isnan(one["seed_ci_low"]) and np.isnan(one["seed_ci_high"])


# ----------------------------------------------------------------------------------------------- notebooks' Zorro path

def test_suite_folders_write_the_synthetic_pairs_in_zorros_format(small_corpus):
    dirs = scoring.suite_folders(["synthetic", "zorro"], corpus_dir=small_corpus, suite_dirs={"zorro": "synthetic"})
    assert dirs == {"synthetic": small_corpus, "zorro": small_corpus / "as_zorro"}
    loaded = scoring.load_suites_for(["synthetic", "zorro"], corpus_dir=small_corpus,
                                         suite_dirs={"zorro": "synthetic"})
    syn, zor = loaded["synthetic"], loaded["zorro"]
    assert [(p.task, p.pair_id, p.good, p.bad) for p in zor] == [(p.task, p.pair_id, p.good, p.bad) for p in
                                                                  sorted(syn, key=lambda p: (p.task, p.pair_id))]
    assert {p.suite for p in zor} == {"zorro"}
    with pytest.raises(EvalDataError, match="unknown suite"):
        scoring.suite_folders(["zorro"], suite_dirs={"zoro": "x"})
    with pytest.raises(EvalDataError, match="suite 'blimp' cannot be written from the synthetic pairs"):
        scoring.suite_folders(["blimp"], corpus_dir=small_corpus, suite_dirs={"blimp": "synthetic"})
    sub = scoring.subsample_suites(loaded, {"zorro": 2})
    assert sub["synthetic"] == syn and max(pd.Series([p.task for p in sub["zorro"]]).value_counts()) == 2


def test_zorro_group_table_with_the_reference_rows(tmp_path):
    write_reference(tmp_path / "zorro")
    refs = suites.references({"zorro": tmp_path / "zorro", "blimp": tmp_path / "blimp"})
    assert list(refs) == ["zorro"]
    rng = np.random.default_rng(2)
    scores = pd.DataFrame([{"method": m, "seed": s, "peer": p, "suite": "zorro", "task": t, "phenomenon": t[:1],
                            "pair_id": i, "correct": bool(rng.random() < 0.7), "tie": False}
                           for m in ("mlm", "dwml") for s in (0, 1) for p in ((1,) if m == "mlm" else (1, 2))
                           for t in ("p-one", "p-two") for i in range(20)])
    out = baselines.per_group_tables(scores, tmp_path / "fig", n_boot=50, references=refs)
    assert set(out) == {"table_zorro_paradigms", "table_zorro_paradigms_intervals"}
    t = out["table_zorro_paradigms"].set_index("method")
    assert list(t.columns) == ["p-one", "p-two", "Avg.", "ties", "paper (Table 2)"]
    assert t.loc["BabyBERTa, AO-CHILDES (max of 3 seeds)", "p-two"] == 90.0
    mlm = scores[scores["method"] == "mlm"]
    assert t.loc["mlm", "p-one"] == pytest.approx(100 * mlm[mlm["task"] == "p-one"]["correct"].mean())
    assert t.loc["mlm", "Avg."] == pytest.approx(100 * mlm.groupby("task")["correct"].mean().mean())
    assert (tmp_path / "fig" / "table_zorro_paradigms.md").is_file()
    rows = baselines.reference_rows(refs).set_index("model")
    assert rows.loc["reference: BabyBERTa, AO-CHILDES (mean of 3 seeds)", "zorro"] == pytest.approx(72.5)
    t1 = baselines.table1(scores, ["mlm", "dwml"], extra_rows=rows.reset_index())
    assert "zorro" in t1.columns and t1["model"].str.startswith("reference: ").sum() == 5


def test_ngram_rows_on_zorro_pairs():
    from dwml.ngrams import ngram_pair_scores

    lines = ["where are the dogs", "are the cats here", "what did she see", "the dogs are here"] * 3
    pairs = [MinimalPair("zorro", t, k, good, bad) for t, items in ZORRO.items() for k, (bad, good) in enumerate(items)]
    rows = scoring.ngram_rows(lines, {"zorro": pairs}, orders=(1, 2)).set_index("model")
    sc = ngram_pair_scores(lines, pairs, (1, 2))
    for n in (1, 2):
        part = sc[sc["order"] == n]
        assert rows.loc[f"word {n}-gram (same corpus)", "zorro"] == pytest.approx(
            100 * part.groupby("task")["correct"].mean().mean())


def test_check_known_names_every_unknown_suite_once():
    suites.check_known(["blimp", "zorro"])  # known: no error
    with pytest.raises(EvalDataError, match=r"^--suites: unknown suites \['glue', 'cola'\]; known: blimp, "):
        suites.check_known(["blimp", "glue", "cola"], "--suites")
    with pytest.raises(EvalDataError, match=r"^unknown suite 'glue'; known: blimp, supplement"):
        suites.check_known(["glue"])
