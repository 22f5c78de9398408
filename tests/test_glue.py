"""dwml.glue: loaders on every BabyLM GLUE file, metrics against hand-computed values, and a fine-tuning run."""
from __future__ import annotations

import math

import pytest

from dwml import glue


def test_metrics_golden_values():
    labels = [1, 1, 1, 0, 0, 1]
    preds = [1, 0, 1, 0, 1, 1]
    # tp=3, fp=1, fn=1, tn=1: accuracy 4/6, F1 = 2*3 / (2*3 + 1 + 1) = 0.75,
    # MCC = (tp*tn - fp*fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)) = (3 - 1) / sqrt(4*4*2*2) = 0.25
    assert glue.compute_metrics("mrpc", preds, labels) == pytest.approx({"accuracy": 4 / 6, "f1": 0.75})
    m = glue.compute_metrics("cola", preds, labels)
    assert m["mcc"] == pytest.approx(2 / math.sqrt(4 * 4 * 2 * 2))
    assert set(glue.compute_metrics("rte", preds, labels)) == {"accuracy"}
    assert glue.majority_accuracy(labels) == pytest.approx(4 / 6)


def test_config_rejects_unknown_tasks_and_bad_values():
    with pytest.raises(ValueError, match="glue.tasks"):
        glue.GlueConfig(tasks=("cola", "squad"))
    with pytest.raises(ValueError, match="glue.learning_rate"):
        glue.GlueConfig(learning_rate=0)


def test_malformed_records_name_file_and_line(tmp_path):
    bad = tmp_path / "rte.valid.jsonl"
    bad.write_text('{"sentence1": "a", "sentence2": "b", "label": 0}\n{"sentence1": "a", "label": 1}\n')
    with pytest.raises(glue.GlueDataError, match=r"rte.valid.jsonl:2: .*sentence2"):
        glue.load_examples(bad, "rte")
    bad.write_text('{"sentence1": "a", "sentence2": "b", "label": 5}\n')
    with pytest.raises(glue.GlueDataError, match=r":1: label 5"):
        glue.load_examples(bad, "rte")
    bad.write_text('{"sentence1": "a",\n')
    with pytest.raises(glue.GlueDataError, match=r":1: not valid JSON"):
        glue.load_examples(bad, "rte")
    tsv = tmp_path / "train.tsv"
    tsv.write_text("sentence\tlabel\ngood film\t1\nbad film\n")
    with pytest.raises(glue.GlueDataError, match=r"train.tsv:3"):
        glue.load_examples(tsv, "sst2")
    with pytest.raises(glue.GlueDataError, match="not found"):
        glue.load_examples(tmp_path / "nope.jsonl", "rte")


def test_every_glue_file_parses(shared_data):
    root = shared_data / "glue_filtered"
    if not root.is_dir():
        pytest.skip(f"{root} absent")
    for task in glue.TASKS:
        train, valid = glue.task_files(root, task)
        for path in (train, valid):
            if not path.is_file():
                assert task in ("boolq", "multirc", "qnli") and path == train, f"{path} missing"
                continue
            ex = glue.load_examples(path, task)
            assert ex and all(len(t) == len(glue.TASKS[task][0]) for t, _ in ex)
    assert len(glue.load_examples(glue.task_files(root, "sst2")[0], "sst2")) == 67_349
    assert len(glue.load_examples(glue.task_files(root, "sst2")[1], "sst2")) == 436


def test_finetuning_a_small_peer_beats_the_majority_on_sst2(shared_data, tmp_path):
    """A small RoBERTa (random encoder: the point is the fine-tuning path, not pretraining) fine-tuned on
    6,000 SST-2 sentences scores above the majority class on BabyLM's sst2.valid."""
    import torch
    from transformers import AutoModelForMaskedLM, RobertaConfig, RobertaForMaskedLM

    from dwml.corpus import read_corpus
    from dwml.tokenizer import train_tokenizer

    root = shared_data / "glue_filtered"
    if not (root / "glue_original" / "SST-2" / "train.tsv").is_file():
        pytest.skip("glue_filtered/glue_original/SST-2 absent")
    tok = train_tokenizer([t[0] for t, _ in glue.load_examples(glue.task_files(root, "sst2")[0], "sst2")][:20000],
                          vocab_size=2000, out_dir=tmp_path / "peer")
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=256, max_position_embeddings=130, pad_token_id=1)
    RobertaForMaskedLM(cfg).save_pretrained(tmp_path / "peer")
    AutoModelForMaskedLM.from_pretrained(tmp_path / "peer")  # a peer folder as training writes it
    res = glue.finetune(tmp_path / "peer", "sst2", root, tmp_path / "out",
                     glue.GlueConfig(tasks=("sst2",), learning_rate=1e-3, batch_size=32, num_epochs=2,
                                  max_train_examples=6000, max_length=64), progress=False)
    print({k: res[k] for k in ("accuracy", "majority_accuracy", "seconds")})
    assert res["majority_accuracy"] == pytest.approx(226 / 436)
    assert res["accuracy"] > res["majority_accuracy"] + 0.05, res
    assert (tmp_path / "out" / "sst2.json").is_file()
