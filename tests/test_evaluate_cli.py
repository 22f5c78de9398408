"""`python -m dwml.evaluate` on a tiny saved RoBERTa and a tiny saved BERT, both built here: the files it
writes, scores equal to ``pll_scores``, and errors that name the bad path."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from conftest import ROOT, saved_tiny_roberta
from dwml.evaluate import __main__ as evaluate_cli
from dwml.evaluate import load_masked_lm, pll_scores
from dwml.suites import load_blimp, load_ewok, load_supplement

WORDS = ["the", "a", "dog", "dogs", "cat", "cats", "sees", "see", "runs", "run", "bird", "birds", "sings", "sing",
         "she", "likes", "park", "to", "in", "is", "here", "they", "we", "saw", "them", "."]
LINES = [" ".join(WORDS[i:i + 5]) for i in range(len(WORDS) - 5)] * 10


def _pair(good, bad, uid, term, k):
    return json.dumps({"sentence_good": good, "sentence_bad": bad, "UID": uid, "linguistics_term": term,
                       "field": "syntax", "pair_id": k})


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A BabyLM-shaped data folder: two BLiMP paradigms, a supplement task, an EWoK domain (as a folder)."""
    root = tmp_path_factory.mktemp("data")
    (root / "blimp_filtered").mkdir()
    (root / "blimp_filtered" / "regular_plural_subject_verb_agreement_1.jsonl").write_text("\n".join(
        [_pair("the dog runs .", "the dog run .", "regular_plural_subject_verb_agreement_1", "subject_verb_agreement", 0),
         _pair("the dogs run .", "the dogs runs .", "regular_plural_subject_verb_agreement_1", "subject_verb_agreement", 1),
         _pair("the cat sees a bird .", "the cat sees a bird .", "regular_plural_subject_verb_agreement_1",
               "subject_verb_agreement", 2)]) + "\n")
    (root / "blimp_filtered" / "determiner_noun_agreement_1.jsonl").write_text("\n".join(
        [_pair("she likes the cats .", "she likes a cats .", "determiner_noun_agreement_1",
               "determiner_noun_agreement", 0),
         _pair("we saw a bird .", "we saw a birds .", "determiner_noun_agreement_1", "determiner_noun_agreement", 1)]) + "\n")
    (root / "supplement_filtered").mkdir()
    (root / "supplement_filtered" / "turn_taking.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"sentence_good": "is the cat here ?\nthey saw them .", "sentence_bad": "is the cat here ?\nwe saw them ."},
        {"sentence_good": "she sings .", "sentence_bad": "she sing ."}]) + "\n")
    (root / "ewok_filtered").mkdir()
    (root / "ewok_filtered" / "social-relations.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"Domain": "social-relations", "Context1": "the dog sees the cat .", "Target1": "the cat runs .",
         "Target2": "the cat sings ."},
        {"Domain": "social-relations", "Context1": "they run to the park .", "Target1": "we run .",
         "Target2": "we sing ."}]) + "\n")
    return root


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A RoBERTa (byte-level BPE, our tokenizer) and a BERT (WordPiece) masked LM, saved like any HF model."""
    from tokenizers import Tokenizer, models as tm, pre_tokenizers, processors
    from transformers import BertConfig, BertForMaskedLM, PreTrainedTokenizerFast

    root = tmp_path_factory.mktemp("models")
    rob = saved_tiny_roberta(root / "tiny-roberta", LINES)

    bert = root / "tiny-bert"
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "?", "\n"] + WORDS)}
    wp = Tokenizer(tm.WordPiece(vocab, unk_token="[UNK]"))
    wp.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wp.post_processor = processors.BertProcessing(("[SEP]", vocab["[SEP]"]), ("[CLS]", vocab["[CLS]"]))
    btok = PreTrainedTokenizerFast(tokenizer_object=wp, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    btok.save_pretrained(bert)
    torch.manual_seed(1)
    b = BertForMaskedLM(BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                   intermediate_size=64, max_position_embeddings=64))
    with torch.no_grad():
        b.cls.predictions.bias.normal_(0, 1.0)
    b.save_pretrained(bert)
    return {"roberta": rob, "bert": bert}


def _all_pairs(data):
    return {"blimp": load_blimp(data / "blimp_filtered"), "supplement": load_supplement(data / "supplement_filtered"),
            "ewok": load_ewok(data / "ewok_filtered")}


def _expected(model_dir, pairs, **kw):
    model, tok = load_masked_lm(model_dir)
    prefixes = [p.prefix for p in pairs] * 2 if any(p.prefix for p in pairs) else None
    return pll_scores(model, tok, [p.good for p in pairs] + [p.bad for p in pairs], prefixes, progress=False, **kw)


def test_cli_writes_files_and_scores_equal_pll_scores(data, models, tmp_path, capsys):
    out = tmp_path / "out"
    rc = evaluate_cli.main([str(models["roberta"]), str(models["bert"]), "--suites", "blimp,supplement,ewok", "--data", str(data),
                 "--out", str(out), "--no-progress", "--bootstrap", "50"])
    assert rc == 0, capsys.readouterr().err
    pairs = _all_pairs(data)
    for name in ("tiny-roberta", "tiny-bert"):
        folder = out / name
        for f in ["pairs.csv", "summary.json"] + [f"{t}.{ext}" for t in ("table_suites", "table_paradigms",
                                                  "table_blimp_phenomena", "table_supplement_tasks",
                                                  "table_ewok_domains") for ext in ("csv", "md")]:
            assert (folder / f).is_file(), f"{name}/{f} missing"
        df = pd.read_csv(folder / "pairs.csv")
        assert len(df) == sum(len(p) for p in pairs.values())
        assert set(df["convention"]) == {"dwml"} and set(df["pll_metric"]) == {"original"}
        for suite, ps in pairs.items():
            part = df[df["suite"] == suite]
            exp = _expected(models[name.split("-")[1]], ps)
            n = len(ps)
            assert np.abs(part["score_good"].to_numpy() - exp[:n]).max() < 1e-5
            assert np.abs(part["score_bad"].to_numpy() - exp[n:]).max() < 1e-5
        # the identical BLiMP pair is a tie, wrong under dwml's convention
        tie = df[(df["suite"] == "blimp") & (df["pair_id"] == 2)].iloc[0]
        assert tie["tie"] and not tie["correct"]
        summary = json.loads((folder / "summary.json").read_text())
        assert set(summary["suites"]) == {"blimp", "supplement", "ewok"}
        assert summary["convention"] == {"name": "dwml", "ties": "wrong", "reduction": "sum", "prefixing": "dwml"}
        blimp_acc = df[df["suite"] == "blimp"].groupby("task")["correct"].mean().mean() * 100
        assert abs(summary["suites"]["blimp"]["accuracy"] - blimp_acc) < 1e-9
        assert abs(summary["suites"]["blimp"]["tie_rate"] - 100 / 5) < 1e-9
        md = (folder / "table_blimp_phenomena.md").read_text()
        assert "convention dwml (ties wrong, reduction sum" in md and "SVA" in md and "DNA" in md
        assert list(pd.read_csv(folder / "table_blimp_phenomena.csv")["group"]) == ["DNA", "SVA"]  # Table 6 order
        assert "SR" in (folder / "table_ewok_domains.md").read_text()
        assert "turn_taking" in (folder / "table_supplement_tasks.csv").read_text()
    assert summary["architecture"] == "BertForMaskedLM"
    for suite in ("blimp", "supplement", "ewok", "suites"):
        assert (out / f"compare_{suite}.md").is_file()


def test_cli_babylm2024_preset(data, models, tmp_path):
    out = tmp_path / "out"
    assert evaluate_cli.main([str(models["roberta"]), "--suites", "blimp,ewok", "--data", str(data), "--out", str(out),
                   "--convention", "babylm2024", "--no-progress", "--bootstrap", "10"]) == 0
    df = pd.read_csv(out / "tiny-roberta" / "pairs.csv")
    for suite, ps in _all_pairs(data).items():
        if suite == "supplement":
            continue
        part = df[df["suite"] == suite]
        exp = _expected(models["roberta"], ps, reduction="mean", prefixing="babylm2024")
        assert np.abs(part["score_good"].to_numpy() - exp[:len(ps)]).max() < 1e-5
    tie = df[(df["suite"] == "blimp") & (df["pair_id"] == 2)].iloc[0]
    assert tie["tie"] and tie["correct"]  # BabyLM's argmax takes the good sentence on a tie
    assert "convention babylm2024 (ties correct, reduction mean, prefixing babylm2024)" in \
        (out / "tiny-roberta" / "table_suites.md").read_text()


def test_python_dash_m_runs_the_command_line(data, models, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "dwml.evaluate", str(models["roberta"]), "--suites", "supplement",
                        "--data", str(data), "--out", str(out), "--ties", "correct", "--pll-metric", "within_word_l2r"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "ties 0.00%" in r.stdout and (out / "tiny-roberta" / "pairs.csv").is_file()
    assert set(pd.read_csv(out / "tiny-roberta" / "pairs.csv")["convention"]) == {"dwml+ties=correct"}


def test_bad_inputs_name_the_path(data, models, tmp_path, capsys):
    from transformers import GPT2Config, PreTrainedTokenizerFast

    def err(argv):
        assert evaluate_cli.main(argv + ["--out", str(tmp_path / "o"), "--no-progress"]) == 2
        return capsys.readouterr().err

    missing = tmp_path / "no-such-model"
    assert str(missing) in err([str(missing), "--suites", "blimp", "--data", str(data)])
    gpt = tmp_path / "gpt2"
    GPT2Config(n_layer=1, n_embd=8, n_head=1).save_pretrained(gpt)
    e = err([str(gpt), "--suites", "blimp", "--data", str(data)])
    assert str(gpt) in e and "not a masked LM" in e
    nomask = tmp_path / "no-mask"
    PreTrainedTokenizerFast(tokenizer_file=str(models["roberta"] / "tokenizer.json"), bos_token="<s>",
                            eos_token="</s>", pad_token="<pad>").save_pretrained(nomask)
    (nomask / "config.json").write_text((models["roberta"] / "config.json").read_text())
    e = err([str(nomask), "--suites", "blimp", "--data", str(data)])
    assert str(nomask) in e and "no mask token" in e
    empty = tmp_path / "empty-data"
    empty.mkdir()
    e = err([str(models["roberta"]), "--suites", "blimp,ewok", "--data", str(empty)])
    assert str(empty / "blimp_filtered") in e and "does not exist" in e
    e = err([str(models["roberta"]), "--suites", "blimp", "--data", str(tmp_path / "nowhere")])
    assert str(tmp_path / "nowhere") in e
    e = err([str(models["roberta"]), "--suites", "blimp,glue", "--data", str(data)])
    assert "glue" in e
