"""Saved peers load in other people's pipelines: the BabyLM 2025 evaluation pipeline pins transformers 4.51.3
and loads a folder with ``AutoTokenizer`` (through ``AutoProcessor``) and ``AutoModelForMaskedLM``.

The fast tests check what is written (the tokenizer config's fields) and that transformers 5's
``AutoTokenizer`` gives the ids of the ``tokenizers`` library itself; the slow test builds a transformers-4
virtual environment (cached under ``.cache/``), loads a peer trained and saved here in it, and compares its
token ids, offsets and a direct-loop pseudo-log-likelihood with ours (``dwml.evaluate.pll_scores``)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, tiny_roberta

SENTENCES = ["Rebecca was here.", "the dog is here", "What do you want?", "Mommy and Daddy went to Boston.",
             "  two  spaces and CAPITALS", "Kristin's cat ate the fish"]


@pytest.fixture(scope="module")
def saved_tokenizer(small_corpus, tmp_path_factory):
    from dwml.corpus import read_corpus
    from dwml.tokenizer import train_tokenizer

    out = tmp_path_factory.mktemp("tok") / "tokenizer"
    train_tokenizer(read_corpus(small_corpus, "train"), vocab_size=600, out_dir=out, model_max_length=130)
    return out


def test_saved_tokenizer_config_names_a_class_both_transformers_know(saved_tokenizer):
    from dwml.tokenizer import PORTABLE_TOKENIZER_CLASS, SPECIAL_TOKENS

    cfg = json.loads((saved_tokenizer / "tokenizer_config.json").read_text())
    assert cfg["tokenizer_class"] == PORTABLE_TOKENIZER_CLASS == "PreTrainedTokenizerFast"  # not TokenizersBackend
    assert cfg["add_prefix_space"] is True  # what 4.x's fast tokenizer would otherwise reset to False
    assert cfg["model_max_length"] == 130
    bos, pad, eos, unk, mask = SPECIAL_TOKENS
    assert {k: cfg[k] for k in ("bos_token", "pad_token", "eos_token", "unk_token", "mask_token", "cls_token",
                                "sep_token")} == dict(bos_token=bos, pad_token=pad, eos_token=eos, unk_token=unk,
                                                      mask_token=mask, cls_token=bos, sep_token=eos)
    tok = json.loads((saved_tokenizer / "tokenizer.json").read_text())
    assert tok["pre_tokenizer"] == {**tok["pre_tokenizer"], "type": "ByteLevel", "add_prefix_space": True}


def test_autotokenizer_gives_the_ids_of_the_tokenizers_library(saved_tokenizer):
    """transformers 5's AutoTokenizer on the saved folder against ``tokenizers`` reading tokenizer.json alone."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(saved_tokenizer), local_files_only=True)
    raw = Tokenizer.from_file(str(saved_tokenizer / "tokenizer.json"))
    for s in SENTENCES:
        enc = tok(s, return_offsets_mapping=True)
        ref = raw.encode(s)
        assert enc["input_ids"] == ref.ids, s
        assert [tuple(o) for o in enc["offset_mapping"]] == ref.offsets, s
    # the first word of a sentence is the same token as elsewhere (the prefix space), capitals lower-cased
    first = tok.convert_ids_to_tokens(tok("Rebecca was")["input_ids"])
    assert first[1].startswith("Ġr") and first[-2] == "Ġwas", first
    assert tok("Rebecca was")["input_ids"] == tok("rebecca was")["input_ids"]
    assert (tok.mask_token_id, tok.pad_token_id, tok.bos_token_id, tok.eos_token_id) == (4, 1, 0, 2)


def test_portable_config_errors_and_prefix_space_lookup(tmp_path, saved_tokenizer):
    from dwml.corpus import DataError
    from dwml.tokenizer import byte_level_prefix_space, write_portable_tokenizer_config

    with pytest.raises(DataError, match=f"{tmp_path} holds no tokenizer_config.json"):
        write_portable_tokenizer_config(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text("{}")
    (tmp_path / "tokenizer.json").write_text('{"pre_tokenizer": ')
    with pytest.raises(DataError, match="not readable as JSON"):
        write_portable_tokenizer_config(tmp_path)
    assert byte_level_prefix_space({"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Digits"}, {"type": "ByteLevel", "add_prefix_space": False}]}}) is False
    assert byte_level_prefix_space({"pre_tokenizer": {"type": "Whitespace"}}) is None
    assert byte_level_prefix_space({"pre_tokenizer": None}) is None
    # a folder written by an older dwml (transformers 5's own config) is mended in place
    old = tmp_path / "old"
    old.mkdir()
    (old / "tokenizer.json").write_bytes((saved_tokenizer / "tokenizer.json").read_bytes())
    (old / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "TokenizersBackend", "mask_token": "<mask>",
                                                           "local_files_only": True}))
    assert write_portable_tokenizer_config(old) == {"tokenizer_class": "PreTrainedTokenizerFast",
                                                    "mask_token": "<mask>", "add_prefix_space": True}


@pytest.fixture(scope="module")
def trained_run(small_corpus, tmp_path_factory):
    """A DWML run of two tiny peers, trained and saved by dwml.train (a few steps)."""
    from dwml import train
    from dwml.config import Config, DataConfig
    from dwml.data import prepare_corpus

    tmp = tmp_path_factory.mktemp("run")
    corpus = prepare_corpus(DataConfig(corpus=str(small_corpus), vocab_size=600, block_size=32,
                                       cache_dir=str(tmp / "cache")), progress=False)
    cfg = Config.from_dict(data={"corpus": "unused", "vocab_size": 600, "block_size": 32}, train=dict(
        method="dwml", learning_rate=3e-3, min_lr=3e-4, warmup_iters=2, lr_decay_iters=20, batch_size=8,
        num_batches=1, num_epochs=6, weight_update_frequency=2, eval_interval=3, eval_batches=1,
        checkpoint_interval=100, device="cpu"))
    torch.manual_seed(0)
    models = [tiny_roberta(len(corpus.tokenizer), layers, hidden, positions=40) for layers, hidden in ((2, 32), (1, 16))]
    return train.train(cfg, corpus, models, tmp / "run", progress=False)


def test_peers_saved_by_training_carry_the_portable_config(trained_run):
    for d in trained_run.peer_dirs:
        cfg = json.loads((Path(d) / "tokenizer_config.json").read_text())
        assert cfg["tokenizer_class"] == "PreTrainedTokenizerFast" and cfg["add_prefix_space"] is True
        assert "local_files_only" not in cfg and "is_local" not in cfg  # how it was loaded here, not what it is
        assert (Path(d) / "config.json").is_file()


def test_quiet_library_bars_silences_transformers_bars(tmp_path):
    """In a fresh interpreter: saving and loading a model prints transformers' bars, unless dwml.model was
    imported (which calls quiet_library_bars)."""
    script = ("import sys, tempfile\n"
              "if sys.argv[1] == 'dwml':\n    import dwml.model\n"
              "from transformers import RobertaConfig, RobertaForMaskedLM, AutoModelForMaskedLM\n"
              "cfg = RobertaConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,"
              " intermediate_size=16, max_position_embeddings=20)\n"
              "d = tempfile.mkdtemp()\nRobertaForMaskedLM(cfg).save_pretrained(d)\nAutoModelForMaskedLM.from_pretrained(d)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE")}
    runs = {how: subprocess.run([sys.executable, "-c", script, how], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300) for how in ("bare", "dwml")}
    for r in runs.values():
        assert r.returncode == 0, r.stderr[-2000:]
    assert "Writing model shards" in runs["bare"].stderr and "Loading weights" in runs["bare"].stderr  # the control
    assert "Writing model shards" not in runs["dwml"].stderr and "Loading weights" not in runs["dwml"].stderr


# --------------------------------------------------------------------------------------------------
# transformers 4.51.3 (the BabyLM 2025 pipeline's pin) in a virtual environment of its own
# --------------------------------------------------------------------------------------------------

TF4_VENV = ROOT / ".cache" / "tf4-venv"
TF4_PINS = ["transformers==4.51.3", "tokenizers==0.21.1", "torch==2.13.0", "numpy"]
"""The pipeline's requirements.txt pins transformers 4.51.3 and tokenizers 0.21.1 (and torch 2.7.0; this
machine's torch 2.13.0 wheel stands in for it: the model code is transformers')."""

TF4_SCRIPT = r'''
import json, sys
import torch, transformers, tokenizers
from transformers import AutoModelForMaskedLM, AutoProcessor, AutoTokenizer

folder, sentences = sys.argv[1], json.loads(sys.argv[2])
tok = AutoTokenizer.from_pretrained(folder)
proc = AutoProcessor.from_pretrained(folder, padding_side="right")  # as the pipeline's dataset does
proc_tok = getattr(proc, "tokenizer", proc)
model = AutoModelForMaskedLM.from_pretrained(folder).double().eval()
out = {"transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
       "tokenizer_class": type(tok).__name__, "processor_class": type(proc).__name__,
       "mask": tok.mask_token_id, "ids": [], "proc_ids": [], "offsets": [], "pll": []}
for s in sentences:
    enc = tok(s, return_offsets_mapping=True, return_special_tokens_mask=True)
    ids = enc["input_ids"]
    out["ids"].append(ids)
    out["proc_ids"].append(proc(text=s, return_offsets_mapping=True)["input_ids"])
    out["offsets"].append([list(o) for o in enc["offset_mapping"]])
    total = 0.0  # the pseudo-log-likelihood by a direct loop: each non-special token masked in turn
    for i, special in enumerate(enc["special_tokens_mask"]):
        if special:
            continue
        masked = torch.tensor([ids])
        masked[0, i] = tok.mask_token_id
        with torch.no_grad():
            logits = model(input_ids=masked).logits[0, i]
        total += torch.log_softmax(logits, -1)[ids[i]].item()
    out["pll"].append(total)
print(json.dumps(out))
'''


def tf4_python() -> Path:
    """The interpreter of the cached transformers-4 environment, built on first use (pip, ~1 minute)."""
    python = TF4_VENV / "bin" / "python"
    stamp = TF4_VENV / ".dwml-pins"
    if python.exists() and stamp.is_file() and stamp.read_text() == "\n".join(TF4_PINS):
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(TF4_VENV)], check=True)
    r = subprocess.run([str(python), "-m", "pip", "install", "-q", *TF4_PINS], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.fail(f"could not build {TF4_VENV} with {TF4_PINS}: {r.stderr[-3000:]}")
    stamp.write_text("\n".join(TF4_PINS))
    return python


@pytest.mark.slow
def test_a_saved_peer_scores_the_same_under_transformers_4(trained_run):
    """A peer trained and saved here, loaded under transformers 4.51.3 as the BabyLM 2025 pipeline loads it:
    the same token ids and offsets as ours (transformers 5), and its pseudo-log-likelihoods by a direct loop
    in float64 equal to ``dwml.evaluate.pll_scores`` here."""
    from dwml.evaluate import load_masked_lm, pll_scores

    t0 = time.perf_counter()
    python = tf4_python()
    built = time.perf_counter() - t0
    peer = trained_run.peer_dirs[0]
    r = subprocess.run([str(python), "-c", TF4_SCRIPT, str(peer), json.dumps(SENTENCES)], capture_output=True,
                       text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    theirs = json.loads(r.stdout.strip().splitlines()[-1])
    assert theirs["transformers"] == "4.51.3" and theirs["tokenizer_class"] == "PreTrainedTokenizerFast"
    model, tok = load_masked_lm(peer)
    ours_ids = [tok(s)["input_ids"] for s in SENTENCES]
    assert theirs["ids"] == ours_ids
    assert theirs["proc_ids"] == ours_ids  # AutoProcessor, the pipeline's entry point, falls back to the same
    assert theirs["offsets"] == [[list(o) for o in tok(s, return_offsets_mapping=True)["offset_mapping"]]
                                 for s in SENTENCES]
    assert theirs["mask"] == tok.mask_token_id == 4
    ours = pll_scores(model.double(), tok, SENTENCES, progress=False)
    assert ours == pytest.approx(theirs["pll"], rel=1e-9, abs=1e-9)
    print(f"\ntransformers-4 environment: {built:.1f} s to build or find; PLL {[round(x, 4) for x in ours]}")
