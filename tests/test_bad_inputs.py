"""Issues 20 and 30: bad inputs a new user tries, each stopped with a clear error (or a warning and a rebuild
of a build product) that names the file, line or parameter, and none of them changing what was already
written. Issue 30 adds run folders as owned state (a marker, a lock while a run writes, a finished run
compared with its config.json), derived files that carry what they were derived from (peers.json, score
caches), strict profiles and options, text that stays text, and a KD teacher checked against the peers.

Every case asserts the error type, that the message names the file or parameter, and (where files exist)
that their bytes are the same afterwards.
"""
from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from dwml import checkpoint
from dwml.corpus import DataError, read_lines
from dwml.data import prepare_corpus
from dwml.tokenizer import BOS_ID, EOS_ID, MASK_ID, PAD_ID, UNK_ID, load_tokenizer, normalize, tokenizer_fingerprint
from dwml.tokens import CACHE_FORMAT, TokenCache
from dwml.config import Config, ConfigError, DataConfig
from conftest import tiny_roberta

BLOCK = 16


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def assert_unchanged(before: dict[str, bytes], root: Path, *except_: str) -> None:
    after = snapshot(root)
    for name, content in before.items():
        if name in except_:
            continue
        assert name in after, f"{name} was deleted"
        assert after[name] == content, f"{name} was changed"


# --------------------------------------------------------------------------------------------------
# Config.validate: every value the loop cannot run is refused, naming the parameter
# --------------------------------------------------------------------------------------------------

CONFIG_CASES = [
    ({"train": {"eval_interval": 0}}, "train.eval_interval"),
    ({"train": {"log_interval": 0}}, "train.log_interval"),
    ({"train": {"checkpoint_interval": 0}}, "train.checkpoint_interval"),
    ({"train": {"checkpoint_interval": -5}}, "train.checkpoint_interval"),
    ({"train": {"num_epochs": -3}}, "train.num_epochs"),
    ({"train": {"num_epochs": 0}}, "train.num_epochs"),
    ({"train": {"eval_batches": 0}}, "train.eval_batches"),
    ({"train": {"patience": 0}}, "train.patience"),
    ({"train": {"max_tokens": -1}}, "train.max_tokens"),
    ({"train": {"warmup_iters": -1}}, "train.warmup_iters"),
    ({"train": {"device": "gpu"}}, "train.device"),
    ({"train": {"device": "mps"}}, "train.device"),
    ({"train": {"device": "cuda:x"}}, "train.device"),
    ({"train": {"device": "CPU"}}, "train.device"),
    ({"train": {"learning_rat": 1e-3}}, "train.learning_rat"),
    ({"trian": {"learning_rate": 1e-3}}, "trian"),
    ({"train": {"batch_size": "three"}}, "train.batch_size"),
    ({"train": {"loss_alpha": 1.5}}, "train.loss_alpha"),
    ({"train": {"method": "dwm"}}, "train.method"),
    ({"data": {"vocab_size": 100}}, "data.vocab_size"),
    ({"data": {"packing": "line"}}, "data.packing"),
    ({"data": {"mlm_probability": 0.0}}, "data.mlm_probability"),
    # issue 30: values validation let through
    ({"train": {"grad_clip": float("nan")}}, "train.grad_clip"),
    ({"train": {"grad_clip": -1.0}}, "train.grad_clip"),
    ({"train": {"weight_decay": -0.1}}, "train.weight_decay"),
    ({"train": {"beta2": 1.5}}, "train.beta2"),
    ({"train": {"beta1": 1.0}}, "train.beta1"),
    ({"train": {"beta1": -0.1}}, "train.beta1"),
    ({"train": {"batch_size": True}}, "train.batch_size"),
    ({"train": {"num_epochs": False}}, "train.num_epochs"),
    ({"train": {"learning_rate": True}}, "train.learning_rate"),
    ({"train": {"learning_rate": float("inf")}}, "train.learning_rate"),
    ({"train": {"temperature": float("nan")}}, "train.temperature"),
    ({"train": {"dropout": float("nan")}}, "train.dropout"),
    ({"train": {"seed": 2**64}}, "train.seed"),
    ({"train": {"seed": -1}}, "train.seed"),
    ({"search": {"seed": 2**32}}, "search.seed"),
    ({"data": {"synthetic_seed": 2**40}}, "data.synthetic_seed"),
    ({"search": {"teacher_layers": 0}}, "search.teacher_layers"),
    ({"search": {"teacher_hidden": 130}}, "search.teacher_hidden"),
    ({"search": {"num_peers": 0}}, "search.num_peers"),
    ({"search": {"num_peers": -1}}, "search.num_peers"),
    ({"search": {"max_hidden": 32}}, "search.max_hidden"),
    ({"search": {"bayesian_n_iter": -1}}, "search.bayesian_n_iter"),
    ({"eval": {"bootstrap": 0}}, "eval.bootstrap"),
    ({"eval": {"batch_size": -4}}, "eval.batch_size"),
    ({"eval": {"max_pairs_per_paradigm": -1}}, "eval.max_pairs_per_paradigm"),
]


@pytest.mark.parametrize("sections,param", CONFIG_CASES, ids=[p + "=" + repr(list(s.values())[0]) for s, p in CONFIG_CASES])
def test_config_refuses_what_the_loop_cannot_run(sections, param):
    with pytest.raises(ConfigError) as err:
        Config.from_dict(sections)
    assert param in str(err.value)


@pytest.mark.parametrize("device", ["auto", "cpu", "cuda", "cuda:0", "cuda:12"])
def test_config_accepts_the_devices_the_loop_resolves(device):
    assert Config.from_dict(train={"device": device}).train.device == device


def test_validate_catches_values_set_after_construction():
    cfg = Config()
    cfg.train.eval_interval = 0
    with pytest.raises(ConfigError, match="train.eval_interval"):
        cfg.validate()


# --------------------------------------------------------------------------------------------------
# Profiles (YAML)
# --------------------------------------------------------------------------------------------------

BAD_YAML = {
    "unclosed_list": ("profile: ci\ntrain:\n  seeds: [0, 1\n  lr: 3\n", r":4:\d+: not valid YAML"),
    "bad_indent": ("profile: ci\n  train: 1\n", r":2:\d+: not valid YAML"),
    "tab": ("profile: ci\ntrain:\n\tlr: 1\n", r":3:\d+: not valid YAML"),
}


@pytest.mark.parametrize("name", sorted(BAD_YAML))
def test_invalid_yaml_profile_names_file_and_line(tmp_path, name):
    from dwml.io import read_yaml

    text, where = BAD_YAML[name]
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=r"mine\.yaml" + where):
        read_yaml(path)
    assert_unchanged(before, tmp_path)


def test_non_utf8_profile_names_file_and_line(tmp_path):
    from dwml.io import read_yaml

    path = tmp_path / "p.yaml"
    path.write_bytes(b"profile: ci\nname: caf\xe9\n")
    with pytest.raises(ValueError, match=r"p\.yaml:2: not UTF-8"):
        read_yaml(path)


def test_runner_load_profile_names_file_and_line(tmp_path):
    from dwml.runner import load_profile

    path = tmp_path / "mine.yaml"
    path.write_text(BAD_YAML["unclosed_list"][0])
    with pytest.raises(Exception, match=r"mine\.yaml:4"):
        load_profile(str(path))


# --------------------------------------------------------------------------------------------------
# Corpus, tokenizer, token cache
# --------------------------------------------------------------------------------------------------

LINES = ["the dog sees the cat", "a cat runs to the park", "the dogs see a bird", "the birds sing",
         "she likes the dog", "we saw them yesterday", "is the cat here", "they run to the park"]


def write_corpus(folder: Path, train=LINES * 8, dev=LINES[:4]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "a.train").write_text("\n".join(train) + "\n")
    (folder / "a.dev").write_text("\n".join(dev) + "\n")
    return folder


def data_cfg(folder: Path, cache: Path, **kw) -> DataConfig:
    return DataConfig(corpus=str(folder), vocab_size=300, min_frequency=1, block_size=BLOCK, cache_dir=str(cache), **kw)


@pytest.fixture
def prepared(tmp_path):
    """A corpus folder, its prepared caches, and a snapshot of the corpus folder's bytes."""
    folder = write_corpus(tmp_path / "corpus")
    cfg = data_cfg(folder, tmp_path / "cache")
    prep = prepare_corpus(cfg, progress=False)
    return folder, cfg, prep


def test_missing_corpus_folder_is_named(tmp_path):
    with pytest.raises(DataError, match=r"data\.corpus=.*nowhere"):
        prepare_corpus(data_cfg(tmp_path / "nowhere", tmp_path / "cache"), progress=False)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.bin"))


def test_corpus_without_train_files_is_named(tmp_path):
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("hello\n")
    before = snapshot(folder)
    with pytest.raises(DataError, match=rf"{folder}.*\*\.train"):
        prepare_corpus(data_cfg(folder, tmp_path / "cache"), progress=False)
    assert_unchanged(before, folder)


def test_non_utf8_train_file_names_file_and_line(tmp_path):
    folder = write_corpus(tmp_path / "corpus")
    (folder / "a.train").write_bytes(b"the dog\nthe cat\ncaf\xe9 au lait\n")
    before = snapshot(folder)
    with pytest.raises(DataError, match=r"a\.train:3: not UTF-8"):
        prepare_corpus(data_cfg(folder, tmp_path / "cache"), progress=False)
    assert_unchanged(before, folder)


@pytest.mark.parametrize("blank", ["", "\n\n   \n"])
def test_blank_dev_split_names_split_and_folder_not_block_size(tmp_path, blank):
    folder = write_corpus(tmp_path / "corpus")
    (folder / "a.dev").write_text(blank)
    before = snapshot(folder)
    with pytest.raises(DataError) as err:
        prepare_corpus(data_cfg(folder, tmp_path / "cache"), progress=False)
    msg = str(err.value)
    assert "dev split" in msg and str(folder) in msg and "a.dev" in msg and "block_size" not in msg
    assert_unchanged(before, folder)


def test_block_size_larger_than_the_dev_split_names_the_parameter(tmp_path):
    folder = write_corpus(tmp_path / "corpus", dev=["a cat"])
    with pytest.raises(DataError, match=r"data\.block_size=64 .*dev split"):
        prepare_corpus(DataConfig(corpus=str(folder), vocab_size=300, min_frequency=1, block_size=64,
                                    cache_dir=str(tmp_path / "cache")), progress=False)


@pytest.mark.parametrize("cut", [0, 10, 0.5])
def test_truncated_tokenizer_json_is_named(prepared, cut):
    folder, cfg, prep = prepared
    file = prep.tokenizer_dir / "tokenizer.json"
    raw = file.read_bytes()
    file.write_bytes(raw[: int(len(raw) * cut) if isinstance(cut, float) else cut])
    before = snapshot(prep.tokenizer_dir)
    with pytest.raises(DataError, match=rf"{file}(:\d+:\d+)?: not a valid tokenizer file"):
        load_tokenizer(prep.tokenizer_dir)
    assert_unchanged(before, prep.tokenizer_dir)


def test_prepare_corpus_retrains_a_truncated_cached_tokenizer(prepared):
    folder, cfg, prep = prepared
    file = prep.tokenizer_dir / "tokenizer.json"
    good = file.read_bytes()
    file.write_bytes(good[:100])
    corpus_before = snapshot(folder)
    with pytest.warns(UserWarning, match=rf"{file}"):
        again = prepare_corpus(cfg, progress=False)
    assert file.read_bytes() == good  # the same lines and settings train the same tokenizer
    assert tokenizer_fingerprint(again.tokenizer) == tokenizer_fingerprint(prep.tokenizer)
    assert_unchanged(corpus_before, folder)


def _overwrite_same_size(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    raw[4:10] = b"\xff" * 6  # ids 65535: far outside a 300-id vocabulary, the file's size unchanged
    path.write_bytes(bytes(raw))


def _sidecar_list(side: Path) -> None:
    side.write_text(json.dumps([json.loads(side.read_text())]))


def _sidecar_missing(field: str):
    def f(side: Path) -> None:
        meta = json.loads(side.read_text())
        del meta[field]
        side.write_text(json.dumps(meta))
    return f


CACHE_DAMAGE = {
    "bin_overwritten_same_size": (lambda bin_, side: _overwrite_same_size(bin_), "train.bin", "checksum"),
    "bin_grown": (lambda bin_, side: bin_.write_bytes(bin_.read_bytes() + b"\0\0"), "train.bin", "bytes"),
    "sidecar_malformed_json": (lambda bin_, side: side.write_text(side.read_text()[:-20]), "train.bin.json", "not valid JSON"),
    "sidecar_empty": (lambda bin_, side: side.write_text(""), "train.bin.json", "not valid JSON"),
    "sidecar_list": (lambda bin_, side: _sidecar_list(side), "train.bin.json", "JSON list"),
    "sidecar_missing_n_tokens": (lambda bin_, side: _sidecar_missing("n_tokens")(side), "train.bin.json", "n_tokens"),
    "sidecar_missing_sha256": (lambda bin_, side: _sidecar_missing("sha256")(side), "train.bin.json", "sha256"),
    "sidecar_bad_id_range": (lambda bin_, side: side.write_text(json.dumps({**json.loads(side.read_text()), "max_id": 70000})),
                             "train.bin.json", "outside the vocabulary"),
}


@pytest.mark.parametrize("damage", sorted(CACHE_DAMAGE))
def test_damaged_token_cache_warns_naming_the_file_and_is_rebuilt(prepared, damage):
    folder, cfg, prep = prepared
    root = prep.train.path.parent
    bin_, side = root / "train.bin", root / "train.bin.json"
    good_bin, good_meta = bin_.read_bytes(), json.loads(side.read_text())
    corpus_before = snapshot(folder)
    dev_before = {n: (root / n).read_bytes() for n in ("dev.bin", "dev.bin.json")}
    fn, named, why = CACHE_DAMAGE[damage]
    fn(bin_, side)
    with pytest.warns(UserWarning) as record:
        again = prepare_corpus(cfg, progress=False)
    msgs = [str(w.message) for w in record if "rebuilding" in str(w.message)]
    assert msgs and str(root / named) in msgs[0] and why in msgs[0], msgs
    assert bin_.read_bytes() == good_bin and json.loads(side.read_text()) == good_meta  # rebuilt as it was
    assert again.train.meta == good_meta
    assert_unchanged(corpus_before, folder)
    assert {n: (root / n).read_bytes() for n in dev_before} == dev_before  # the dev cache was left alone


def test_sidecar_records_checksum_and_id_range(prepared):
    _, _, prep = prepared
    meta = prep.train.meta
    tokens = np.asarray(prep.train.tokens)
    assert meta["format"] == CACHE_FORMAT == 2
    from dwml.io import file_sha256

    assert meta["sha256"] == file_sha256(prep.train.path)
    assert (meta["min_id"], meta["max_id"]) == (int(tokens.min()), int(tokens.max()))
    assert meta["max_id"] < len(prep.tokenizer)


def test_older_cache_format_is_rebuilt_silently(prepared):
    folder, cfg, prep = prepared
    side = prep.train.path.with_suffix(".bin.json")
    good = side.read_text()
    meta = json.loads(good)
    side.write_text(json.dumps({k: v for k, v in {**meta, "format": 1}.items() if k not in ("sha256", "min_id", "max_id")}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a new package version is not damage: no warning
        prepare_corpus(cfg, progress=False)
    assert json.loads(side.read_text()) == json.loads(good)


def test_ids_outside_the_vocabulary_are_caught_naming_the_file(prepared):
    folder, cfg, prep = prepared
    _overwrite_same_size(prep.train.path)
    before = snapshot(prep.train.path.parent)
    with pytest.raises(DataError, match=rf"token cache {prep.train.path}: id 65535 .*vocabulary of {len(prep.tokenizer)}"):
        prep.train.check_ids(len(prep.tokenizer))
    assert_unchanged(before, prep.train.path.parent)
    # and peers built with a smaller vocabulary than the cache uses
    with pytest.raises(DataError, match=str(prep.dev.path)):
        prep.dev.check_ids(int(np.asarray(prep.dev.tokens).max()))
    prep.dev.check_ids(len(prep.tokenizer))  # a good cache passes


# --------------------------------------------------------------------------------------------------
# Minimal-pair files
# --------------------------------------------------------------------------------------------------

GOOD_PAIR = {"sentence_good": "the cat runs", "sentence_bad": "the cat run", "UID": "agr", "field": "m",
             "linguistics_term": "agreement", "pair_id": 0}


@pytest.mark.parametrize("loader", ["load_blimp", "load_supplement"])
def test_non_utf8_pair_file_names_file_and_line(tmp_path, loader):
    from dwml import evaluate, suites

    folder = tmp_path / "pairs"
    folder.mkdir()
    path = folder / "agr.jsonl"
    path.write_bytes((json.dumps(GOOD_PAIR) + "\n").encode() * 2 + b'{"sentence_good": "caf\xe9"}\n')
    before = snapshot(folder)
    with pytest.raises(evaluate.EvalDataError, match=r"agr\.jsonl:3: not UTF-8"):
        getattr(suites, loader)(folder)
    assert_unchanged(before, folder)


def test_malformed_pair_line_names_file_and_line(tmp_path):
    from dwml import evaluate, suites

    folder = tmp_path / "pairs"
    folder.mkdir()
    (folder / "agr.jsonl").write_text(json.dumps(GOOD_PAIR) + "\n{not json\n")
    with pytest.raises(evaluate.EvalDataError, match=r"agr\.jsonl:2"):
        suites.load_blimp(folder)


# --------------------------------------------------------------------------------------------------
# GLUE
# --------------------------------------------------------------------------------------------------

def _glue_root(tmp_path: Path, tasks=("rte", "mrpc", "cola")) -> Path:
    root = tmp_path / "glue"
    root.mkdir()
    rec = {"sentence1": "a", "sentence2": "b", "sentence": "a", "label": 0}
    for t in tasks:
        for split in ("train", "valid"):
            (root / f"{t}.{split}.jsonl").write_text(json.dumps(rec) + "\n")
    return root


def _fake_model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "peer_0"
    d.mkdir()
    (d / "config.json").write_text("{}")
    (d / "tokenizer.json").write_text("{}")
    return d


@pytest.mark.parametrize("what", ["missing", "empty_folder", "a_file"])
def test_missing_glue_model_dir_is_named(tmp_path, what):
    from dwml import glue

    model_dir = tmp_path / "runs" / "peer_0"
    if what == "empty_folder":
        model_dir.mkdir(parents=True)
    elif what == "a_file":
        model_dir.parent.mkdir(parents=True)
        model_dir.write_text("not a folder")
    root = _glue_root(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(glue.GlueDataError, match=rf"model_dir {model_dir}"):
        glue.finetune(model_dir, "rte", root, tmp_path / "out", progress=False)
    with pytest.raises(glue.GlueDataError, match=rf"model_dir {model_dir}"):
        glue.finetune_all(model_dir, root, tmp_path / "out", progress=False)
    assert_unchanged(before, tmp_path)
    assert not (tmp_path / "out").exists()


def test_finetune_all_reports_every_missing_task_file_before_fine_tuning(tmp_path, monkeypatch):
    from dwml import glue

    root = _glue_root(tmp_path)
    (root / "mrpc.train.jsonl").unlink()
    (root / "cola.valid.jsonl").unlink()
    model_dir = _fake_model_dir(tmp_path)
    calls = []
    monkeypatch.setattr(glue, "finetune", lambda *a, **k: calls.append(a) or {})
    before = snapshot(tmp_path)
    with pytest.raises(glue.GlueDataError) as err:
        glue.finetune_all(model_dir, root, tmp_path / "out", glue.GlueConfig(tasks=("rte", "mrpc", "cola")), progress=False)
    msg = str(err.value)
    assert str(root / "mrpc.train.jsonl") in msg and str(root / "cola.valid.jsonl") in msg and "2 file(s)" in msg
    assert "rte" not in msg.split("missing:")[1]
    assert calls == [], "nothing is fine-tuned before the files are checked"
    assert_unchanged(before, tmp_path)


# --------------------------------------------------------------------------------------------------
# Checkpoints: reading, and what a second call on a run folder may do
# --------------------------------------------------------------------------------------------------

def _real_checkpoint(path: Path) -> bytes:
    from dwml.io import atomic_torch_save

    ck = {k: {} for k in checkpoint.REQUIRED_KEYS}
    ck.update(models=[{"w": torch.arange(1000.0)}], metrics_bytes=0)
    atomic_torch_save(path, ck)
    return path.read_bytes()


@pytest.mark.parametrize("damage", ["empty", "truncated_half", "truncated_tail", "garbage", "not_a_dict", "missing_keys"])
def test_unreadable_checkpoint_is_named(tmp_path, damage):
    path = tmp_path / "run" / "checkpoint.pt"
    raw = _real_checkpoint(path)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "truncated_half":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "truncated_tail":
        path.write_bytes(raw[:-30])
    elif damage == "garbage":
        path.write_bytes(b"not a checkpoint at all\n" * 10)
    elif damage == "not_a_dict":
        torch.save([1, 2, 3], path)
    else:
        torch.save({"models": []}, path)
    before = snapshot(tmp_path)
    with pytest.raises(checkpoint.CheckpointError) as err:
        checkpoint.read_checkpoint(path)
    assert str(path) in str(err.value) and isinstance(err.value, ConfigError)
    assert_unchanged(before, tmp_path)


def test_good_checkpoint_reads_back(tmp_path):
    path = tmp_path / "checkpoint.pt"
    _real_checkpoint(path)
    assert torch.equal(checkpoint.read_checkpoint(path)["models"][0]["w"], torch.arange(1000.0))


def _cfg(**train) -> dict:
    base = dict(num_epochs=15, eval_interval=5, lr_decay_iters=40, device="cpu")
    base.update(train)
    return Config.from_dict(train=base).to_dict()


DECISIONS = [
    # (saved, current, done, state, expected or the fields the error must name)
    (_cfg(), _cfg(), True, {"step": 15}, "same"),
    (_cfg(), _cfg(device="auto", log_interval=5, checkpoint_interval=3), True, {"step": 15}, "same"),
    (_cfg(), _cfg(num_epochs=30), True, {"step": 15}, "extend"),
    (_cfg(), _cfg(num_epochs=30, max_tokens=10 ** 12), True, {"step": 15}, "extend"),
    (_cfg(), _cfg(num_epochs=30), True, {"step": 10, "stopped_early": True}, "same"),
    (_cfg(), _cfg(num_epochs=30), True, {"step": 15, "stopped_early": True}, "same"),
    (_cfg(num_epochs=250), _cfg(num_epochs=300), True, {"step": 250}, "extend"),
    (_cfg(), _cfg(num_epochs=30), False, {"step": 7}, "same"),
    (_cfg(), _cfg(num_epochs=10), False, {"step": 7}, "same"),
    (_cfg(), _cfg(num_epochs=10), True, {"step": 15}, ["train.num_epochs", "15 steps", "10 steps"]),
    (_cfg(), _cfg(num_epochs=5), False, {"step": 7}, ["train.num_epochs", "step 7"]),
    (_cfg(), _cfg(num_epochs=30, learning_rate=1e-2), True, {"step": 15}, ["train.learning_rate"]),
    (_cfg(), _cfg(num_epochs=30, lr_decay_iters=80), True, {"step": 15}, ["train.lr_decay_iters"]),
    (_cfg(), _cfg(seed=1, loss_alpha=0.1), False, {"step": 7}, ["train.seed", "train.loss_alpha"]),
    (_cfg(num_epochs=14), _cfg(num_epochs=30), True, {"step": 14, "stopped_early": True},
     ["stopped early", "eval_interval=5"]),
]


@pytest.mark.parametrize("saved,current,done,state,expected", DECISIONS)
def test_resume_decision(saved, current, done, state, expected):
    if isinstance(expected, str):
        assert checkpoint.resume_decision(saved, current, done, state, "run/checkpoint.pt") == expected
    else:
        with pytest.raises(checkpoint.CheckpointMismatchError) as err:
            checkpoint.resume_decision(saved, current, done, state, "run/checkpoint.pt")
        for field in expected + ["run/checkpoint.pt"]:
            assert field in str(err.value)


def test_resume_decision_compares_the_corpus():
    saved, current = _cfg(), _cfg()
    saved["corpus"], current["corpus"] = {"tokenizer": "a"}, {"tokenizer": "b"}
    with pytest.raises(checkpoint.CheckpointMismatchError, match="corpus"):
        checkpoint.resume_decision(saved, current, True, {"step": 15})


def test_extension_note_says_what_changes():
    note = checkpoint.extension_note("run/checkpoint.pt", _cfg(num_epochs=12), _cfg(num_epochs=30), {"step": 12})
    assert "12 steps" in note and "30" in note and "run/checkpoint.pt" in note and "eval_interval=5" in note
    assert "eval_interval" not in checkpoint.extension_note("r/checkpoint.pt", _cfg(), _cfg(num_epochs=30), {"step": 15})


def test_checkpoint_note_does_not_claim_a_checkpoint_that_is_not_there(tmp_path):
    path = tmp_path / "checkpoint.pt"
    assert "no checkpoint was written yet" in checkpoint.checkpoint_note(path) and str(path) in checkpoint.checkpoint_note(path)
    path.write_bytes(b"")
    assert "no checkpoint was written yet" in checkpoint.checkpoint_note(path)
    _real_checkpoint(path)
    assert "is kept" in checkpoint.checkpoint_note(path, step=4) and "step 4" in checkpoint.checkpoint_note(path, step=4)


# --------------------------------------------------------------------------------------------------
# Through dwml.train (tiny peers)
# --------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(small_corpus, tmp_path_factory):
    return prepare_corpus(DataConfig(corpus=str(small_corpus), vocab_size=600, block_size=32,
                                       cache_dir=str(tmp_path_factory.mktemp("cache"))), progress=False)


def tiny_peers(vocab: int, n: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    return [tiny_roberta(vocab, attn_implementation="eager") for _ in range(n)]


def tiny_config(**train) -> Config:
    base = dict(method="dml", learning_rate=3e-3, min_lr=3e-4, warmup_iters=1, lr_decay_iters=20, batch_size=4,
                num_batches=1, num_epochs=4, eval_interval=2, eval_batches=1, checkpoint_interval=100, device="cpu")
    base.update(train)
    return Config.from_dict(data={"corpus": "unused", "vocab_size": 600, "block_size": 32}, train=base)


def _params(models):
    return [p.detach().clone() for m in models for p in m.state_dict().values()]


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_train_names_an_unreadable_checkpoint(corpus, tmp_path, damage):
    from dwml import train

    vocab = len(corpus.tokenizer)
    train.train(tiny_config(), corpus, tiny_peers(vocab), tmp_path / "run", progress=False, max_steps=2)
    path = tmp_path / "run" / train.CHECKPOINT
    raw = path.read_bytes()
    path.write_bytes(b"" if damage == "empty" else raw[: len(raw) // 2])
    before = snapshot(tmp_path / "run")
    with pytest.raises(checkpoint.CheckpointError, match=str(path)):
        train.train(tiny_config(), corpus, tiny_peers(vocab), tmp_path / "run", progress=False)
    assert_unchanged(before, tmp_path / "run")


def test_finished_run_with_more_steps_is_extended_not_reused(corpus, tmp_path):
    """4 steps, then 6 in the same folder: the run continues from its final checkpoint to 6 steps and
    its peers equal those of an uninterrupted 6-step run (the old end, step 4, is an evaluation step of
    both, so even the metrics agree)."""
    from dwml import train

    vocab = len(corpus.tokenizer)
    first = train.train(tiny_config(num_epochs=4), corpus, tiny_peers(vocab), tmp_path / "run", progress=False)
    assert first.summary["steps"] == 4
    models = tiny_peers(vocab, seed=7)
    with pytest.warns(UserWarning, match="extending"):
        longer = train.train(tiny_config(num_epochs=6), corpus, models, tmp_path / "run", progress=False)
    assert longer.done and longer.summary["steps"] == 6
    ref_models = tiny_peers(vocab)
    ref = train.train(tiny_config(num_epochs=6), corpus, ref_models, tmp_path / "ref", progress=False)
    for a, b in zip(_params(ref_models), _params(models)):
        assert torch.equal(a, b)
    drop = ["tokens_per_s", "elapsed_s"]
    assert ref.history.drop(columns=drop).to_json() == longer.history.drop(columns=drop).to_json()


def test_finished_run_under_a_shorter_or_other_config_is_refused(corpus, tmp_path):
    from dwml import train

    vocab = len(corpus.tokenizer)
    train.train(tiny_config(num_epochs=4), corpus, tiny_peers(vocab), tmp_path / "run", progress=False)
    before = snapshot(tmp_path / "run")
    with pytest.raises(checkpoint.CheckpointMismatchError, match="4 steps.*3 steps"):
        train.train(tiny_config(num_epochs=3), corpus, tiny_peers(vocab), tmp_path / "run", progress=False)
    with pytest.raises(checkpoint.CheckpointMismatchError, match=r"train\.learning_rate"):
        train.train(tiny_config(num_epochs=6, learning_rate=1e-3), corpus, tiny_peers(vocab), tmp_path / "run",
                progress=False)
    assert_unchanged(before, tmp_path / "run")


def test_train_refuses_what_validate_refuses_before_writing(corpus, tmp_path):
    from dwml import train

    cfg = tiny_config()
    cfg.train.eval_interval = 0  # set after construction: train() validates again
    with pytest.raises(ConfigError, match="train.eval_interval"):
        train.train(cfg, corpus, tiny_peers(len(corpus.tokenizer)), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / train.CHECKPOINT).exists() and not (tmp_path / "run" / train.DONE).exists()


def test_nan_before_the_first_checkpoint_does_not_claim_one(corpus, tmp_path, monkeypatch):
    from dwml import methods
    from dwml import train

    original = methods.DML.loss

    def poisoned(self, batch):
        loss, parts = original(self, batch)
        return loss + float("inf"), {**parts, "ce": parts["ce"] + float("inf")}

    monkeypatch.setattr(methods.DML, "loss", poisoned)
    with pytest.raises(FloatingPointError) as err:
        train.train(tiny_config(checkpoint_interval=100), corpus, tiny_peers(len(corpus.tokenizer)), tmp_path / "run",
                progress=False)
    msg = str(err.value)
    assert "step 1" in msg and re.search(r"no checkpoint (was|had been) written yet", msg) and "is kept" not in msg
    assert not (tmp_path / "run" / train.CHECKPOINT).exists()


def test_cache_ids_outside_the_peers_vocabulary_stop_train_naming_the_file(corpus, tmp_path):
    import dataclasses

    from dwml import train

    small = dataclasses.replace(corpus)
    vocab = len(corpus.tokenizer)
    hi = int(np.asarray(corpus.train.tokens).max())
    # peers whose vocabulary covers the tokenizer's size check but not every id in the cache is impossible
    # with a sound cache; fake a cache whose ids exceed the tokenizer's vocabulary instead
    bad = tmp_path / "bad.bin"
    arr = np.asarray(corpus.train.tokens).copy()
    arr[5] = vocab + 50
    arr.tofile(bad)
    small.train = TokenCache(bad, {**corpus.train.meta})
    with pytest.raises(DataError, match=str(bad)):
        train.train(tiny_config(), small, tiny_peers(vocab), tmp_path / "run", progress=False)
    assert hi < vocab


# ==================================================================================================
# Issue 30
# ==================================================================================================

def _fields_of(kind: str):
    import dataclasses

    from dwml.config import SECTIONS

    return [(sec, f.name) for sec, klass in SECTIONS.items() for f in dataclasses.fields(klass) if str(f.type) == kind]


@pytest.mark.parametrize("section,name", _fields_of("float") + _fields_of("float | None"))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_refused_in_every_float_setting(section, name, bad):
    """Set after construction, so every float field is reached whatever its range check is."""
    cfg = Config()
    setattr(getattr(cfg, section), name, bad)
    with pytest.raises(ConfigError, match=rf"{section}\.{name}="):
        cfg.validate()


@pytest.mark.parametrize("section,name", _fields_of("int") + _fields_of("float"))
def test_booleans_are_not_numbers(section, name):
    with pytest.raises(ConfigError, match=rf"{section}\.{name}=True"):
        Config.from_dict({section: {name: True}})


def test_nan_grad_clip_no_longer_passes_and_equal_values_still_resume():
    """The case that made a run unresumable: grad_clip NaN passed validation and NaN != NaN."""
    import yaml

    for text in ("grad_clip: .nan", "grad_clip: .inf", "grad_clip: nan"):  # YAML's NaN, infinity; a string "nan"
        with pytest.raises(ConfigError, match=r"train\.grad_clip=(nan|inf|'nan')"):
            Config.from_dict(train=yaml.safe_load(text))
    assert Config.from_dict(train={"grad_clip": 0}).train.grad_clip == 0.0  # 0 still turns clipping off


DUPLICATE_YAML = {
    "top_level": ("profile: ci\ntrain:\n  learning_rate: 0.1\ndata:\n  vocab_size: 600\ntrain:\n  num_epochs: 3\n", 6, "train"),
    "nested": ("profile: ci\ntrain:\n  learning_rate: 0.1\n  num_epochs: 2\n  learning_rate: 0.2\n", 5, "learning_rate"),
    "flow": ("profile: ci\ndata: {vocab_size: 600, vocab_size: 700}\n", 2, "vocab_size"),
}


@pytest.mark.parametrize("name", sorted(DUPLICATE_YAML))
def test_a_key_written_twice_is_refused_with_file_and_line(tmp_path, name):
    from dwml.io import read_yaml
    from dwml.runner import NotebookError, load_profile

    text, line, key = DUPLICATE_YAML[name]
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match=rf"mine\.yaml:{line}: key '{key}' written twice"):
        read_yaml(path)
    with pytest.raises(NotebookError, match=rf"mine\.yaml:{line}: key '{key}'"):
        load_profile(str(path))
    assert_unchanged(before, tmp_path)


def test_profiles_have_no_key_written_twice():
    from dwml.runner import load_profile

    for name in ("ci", "default", "aochildes", "babylm10m", "gpu"):
        load_profile(name)


TRAIN_CLI_BAD = [(["--num-peers", "-1"], "--num-peers"), (["--num-peers", "0"], "--num-peers"),
                 (["--seed", "-3"], "--seed"), (["--seed", str(2**40)], "--seed"), (["--max-steps", "0"], "--max-steps")]
EVAL_CLI_BAD = [(["--bootstrap", "0"], "--bootstrap"), (["--batch-size", "-8"], "--batch-size"),
                (["--threads", "0"], "--threads"), (["--threads", "-2"], "--threads"),
                (["--max-pairs-per-task", "-1"], "--max-pairs-per-task"), (["--seed", "x"], "--seed")]


@pytest.mark.parametrize("args,option", TRAIN_CLI_BAD, ids=[" ".join(a) for a, _ in TRAIN_CLI_BAD])
def test_train_cli_options_are_range_checked(args, option, capsys):
    from dwml.train.__main__ import build_parser

    with pytest.raises(SystemExit) as err:
        build_parser().parse_args(["--profile", "ci", "--method", "dml", "--seed", "0", *args])
    assert err.value.code == 2 and f"argument {option}" in capsys.readouterr().err


@pytest.mark.parametrize("args,option", EVAL_CLI_BAD, ids=[" ".join(a) for a, _ in EVAL_CLI_BAD])
def test_evaluate_cli_options_are_range_checked(args, option, capsys, tmp_path):
    from dwml.evaluate.__main__ import main

    with pytest.raises(SystemExit) as err:
        main([str(tmp_path / "model"), "--out", str(tmp_path / "out"), *args])
    assert err.value.code == 2 and f"argument {option}" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # nothing written (--bootstrap 0 wrote NaN into summary.json)


RUNNER_BAD = [("seeds", 0, "seeds=0"), ("seeds", [], "seeds=[]"), ("seeds", [0, "one"], "seeds="),
              ("seeds", [0, 2**40], "seeds="), ("max_pairs_per_task", "ten", "max_pairs_per_task='ten'"),
              ("max_pairs_per_task", True, "max_pairs_per_task=True"), ("glue_tasks", "rte", "glue_tasks='rte'"),
              ("train", {"grad_clip": float("nan")}, "train.grad_clip"), ("search", {"num_peers": 0}, "search.num_peers"),
              ("data", ["vocab_size", 600], "data=")]


@pytest.mark.parametrize("key,value,named", RUNNER_BAD, ids=[f"{k}={v!r}" for k, v, _ in RUNNER_BAD])
def test_runner_checks_parameter_types_before_the_first_cell(tmp_path, key, value, named, capsys, monkeypatch):
    import yaml

    from dwml import runner

    profile = runner.load_profile("ci")
    profile.update({key: value, "run_root": str(tmp_path / "runs"), "figures_dir": str(tmp_path / "fig")})
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(profile))
    ran = []
    monkeypatch.setattr(runner, "run_notebook", lambda *a, **k: ran.append(a))
    assert runner.main(["--profile", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and named in err, err
    assert ran == [] and not (tmp_path / "runs").exists()


def test_runner_accepts_the_shipped_profiles():
    from dwml import runner

    for name in ("ci", "default", "aochildes", "babylm10m", "gpu"):
        runner.check_profile(runner.load_profile(name), runner.profile_file(name))


# --------------------------------------------------------------------------------------------------
# Text stays text: line separators and special-token strings
# --------------------------------------------------------------------------------------------------

SEPARATORS = {"line_separator": "\u2028", "paragraph_separator": "\u2029", "form_feed": "\x0c", "nel": "\x85",
              "vertical_tab": "\x0b", "record_separator": "\x1e"}


@pytest.mark.parametrize("name", sorted(SEPARATORS))
def test_unicode_line_separators_do_not_split_an_utterance(tmp_path, name):
    sep = SEPARATORS[name]
    train = LINES * 8 + [f"the dog{sep}sees the cat", f"a bird{sep}{sep}sings"]
    folder = write_corpus(tmp_path / "corpus", train=train)
    assert len(str.splitlines("\n".join(train))) > len(train)  # what str.splitlines would have made of it
    lines = read_lines(folder / "a.train")
    assert len(lines) == len(train) == (folder / "a.train").read_bytes().count(b"\n")
    assert lines[-2:] == ["the dog sees the cat", "a bird sings"]  # the separator is whitespace inside the line
    prep = prepare_corpus(data_cfg(folder, tmp_path / "cache"), progress=False)
    assert prep.train.meta["n_lines"] == len(train)
    assert int((np.asarray(prep.train.tokens) == EOS_ID).sum()) == len(train)


SPECIAL_LINES = ["the dog </s> sees the cat", "a <pad> cat runs to the park", "<mask> is the <s> bird here",
                 "she likes </s></s> the dog <unk>"]


def _plain_tokenizer(tokenizer):
    """The same BPE with no added (special) tokens: an independent encoder of text as text."""
    from tokenizers import Tokenizer

    raw = json.loads(tokenizer.backend_tokenizer.to_str())
    raw["added_tokens"] = []
    return Tokenizer.from_str(json.dumps(raw))


def test_special_token_strings_in_the_corpus_stay_text_in_the_token_cache(tmp_path):
    train = LINES * 8 + SPECIAL_LINES * 3
    folder = write_corpus(tmp_path / "corpus", train=train, dev=LINES[:4] + SPECIAL_LINES)
    prep = prepare_corpus(data_cfg(folder, tmp_path / "cache"), progress=False)
    tok, plain = prep.tokenizer, _plain_tokenizer(prep.tokenizer)
    stream = np.asarray(prep.train.tokens).tolist()
    assert stream.count(EOS_ID) == len(train) == prep.train.meta["n_lines"]  # one </s> an utterance, no more
    assert not set(stream) & {BOS_ID, PAD_ID, UNK_ID, MASK_ID}
    utterances, cur = [], []
    for t in stream:
        if t == EOS_ID:
            utterances.append(cur)
            cur = []
        else:
            cur.append(t)
    for line, ids in zip(train, utterances):  # against the independent encoder, and back to the text
        assert ids == plain.encode(line, add_special_tokens=False).ids, line
        assert tok.decode(ids).strip() == normalize(tok, line)
    # the packed batcher finds the utterances the file holds, not more
    batcher = prep.batcher("train", DataConfig(block_size=BLOCK, packing="lines"), 4, seed=0)
    assert len(batcher.line_starts) == len(train)


def test_a_cache_built_when_special_strings_became_ids_is_rebuilt(tmp_path):
    folder = write_corpus(tmp_path / "corpus", train=LINES * 8 + SPECIAL_LINES)
    cfg = data_cfg(folder, tmp_path / "cache")
    prep = prepare_corpus(cfg, progress=False)
    side = prep.train.path.with_suffix(".bin.json")
    good_bin, meta = prep.train.path.read_bytes(), json.loads(side.read_text())
    del meta["special_tokens"]  # a sidecar written before the field existed
    side.write_text(json.dumps(meta))
    again = prepare_corpus(cfg, progress=False)
    assert again.train.meta["special_tokens"] == "text" and prep.train.path.read_bytes() == good_bin


def _direct_pll(model, ids: list[int], mask_id: int) -> float:
    """Sum over positions 1..n-2 of log p(token | the rest, that position masked): one copy at a time, float64."""
    total = 0.0
    with torch.no_grad():
        for p in range(1, len(ids) - 1):
            masked = list(ids)
            masked[p] = mask_id
            logits = model(input_ids=torch.tensor([masked])).logits[0, p].double()
            total += float(torch.log_softmax(logits, -1)[ids[p]])
    return total


def test_special_token_strings_in_a_sentence_are_scored_as_text(corpus):
    from dwml import evaluate

    tok = corpus.tokenizer
    plain = _plain_tokenizer(tok)
    torch.manual_seed(0)
    model = tiny_roberta(len(tok), positions=80).eval()
    sentences = ["the dog </s> sees the cat", "a <pad> cat <mask> runs <s>"]
    for sentence in sentences:
        expected = [BOS_ID] + plain.encode(sentence, add_special_tokens=False).ids + [EOS_ID]
        ids, start, end = evaluate.encode_for_pll(tok, [sentence])[0]
        assert ids == expected and (start, end) == (1, len(ids) - 1)
        assert not set(ids[1:-1]) & set(range(5))
        score = evaluate.pll_scores(model, tok, [sentence], progress=False)[0]
        assert score == pytest.approx(_direct_pll(model, expected, tok.mask_token_id), rel=1e-5, abs=1e-5)
        # the encoding this replaces put special ids into the sentence, and scored something else
        old = tok(sentence, add_special_tokens=True)["input_ids"]
        assert set(old[1:-1]) & set(range(5)) and old != expected
    # the within-word metric lays out the same ids
    ids_l2r = evaluate.encode_scored(tok, sentences, pll_metric="within_word_l2r")
    assert [x[0] for x in ids_l2r] == [evaluate.encode_for_pll(tok, [s])[0][0] for s in sentences]


# --------------------------------------------------------------------------------------------------
# Run folders as owned state
# --------------------------------------------------------------------------------------------------

def test_a_folder_that_is_not_a_run_is_refused_before_anything_is_written(corpus, tmp_path):
    from dwml import train

    out = tmp_path / "eval_out"  # an evaluation output folder given as the run folder
    out.mkdir()
    for name, text in (("summary.json", '{"model": "x"}'), ("metrics.jsonl", '{"a": 1}\n'), ("DONE", "done\n"),
                       ("pairs.csv", "a,b\n1,2\n")):
        (out / name).write_text(text)
    before = snapshot(out)
    with pytest.raises(checkpoint.RunFolderError) as err:
        train.train(tiny_config(), corpus, tiny_peers(len(corpus.tokenizer)), out, progress=False)
    msg = str(err.value)
    assert str(out) in msg and "not a dwml run folder" in msg and "summary.json" in msg
    assert snapshot(out) == before  # not even a lock file or a marker
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(checkpoint.RunFolderError, match=str(tmp_path / "a_file")):
        train.train(tiny_config(), corpus, tiny_peers(len(corpus.tokenizer)), tmp_path / "a_file", progress=False)


def test_an_empty_folder_becomes_a_run_folder_and_an_older_run_is_adopted(corpus, tmp_path):
    from dwml import train

    run = tmp_path / "run"
    run.mkdir()
    vocab = len(corpus.tokenizer)
    first = train.train(tiny_config(), corpus, tiny_peers(vocab), run, progress=False)
    assert (run / checkpoint.RUN_MARKER).is_file() and (run / checkpoint.LOCK_FILE).read_text() == ""  # released
    (run / checkpoint.RUN_MARKER).unlink()  # a run written before the marker existed
    (run / checkpoint.LOCK_FILE).unlink()
    again = train.train(tiny_config(), corpus, tiny_peers(vocab), run, progress=False)
    assert again.done and again.summary == first.summary and (run / checkpoint.RUN_MARKER).is_file()


def test_a_finished_run_without_its_checkpoint_is_compared_with_its_config(corpus, tmp_path):
    from dwml import train

    vocab = len(corpus.tokenizer)
    run = tmp_path / "run"
    first = train.train(tiny_config(), corpus, tiny_peers(vocab), run, progress=False)
    (run / train.CHECKPOINT).unlink()
    before = snapshot(run)
    with pytest.raises(checkpoint.CheckpointMismatchError) as err:
        train.train(tiny_config(learning_rate=1e-2), corpus, tiny_peers(vocab), run, progress=False)
    assert str(run / train.CONFIG) in str(err.value) and "train.learning_rate" in str(err.value)
    assert_unchanged(before, run, checkpoint.LOCK_FILE)
    with pytest.raises(checkpoint.CheckpointMismatchError, match="cannot be extended"):
        train.train(tiny_config(num_epochs=6), corpus, tiny_peers(vocab), run, progress=False)
    assert_unchanged(before, run, checkpoint.LOCK_FILE)
    same = train.train(tiny_config(device="cpu", log_interval=2), corpus, tiny_peers(vocab), run, progress=False)
    assert same.done and same.summary == first.summary  # the same computation: reused
    assert_unchanged(before, run, checkpoint.LOCK_FILE)
    (run / train.CONFIG).unlink()
    with pytest.raises(checkpoint.CheckpointMismatchError, match="config.json are both gone"):
        train.train(tiny_config(), corpus, tiny_peers(vocab), run, progress=False)
    # resume=False still starts over, deliberately
    assert train.train(tiny_config(learning_rate=1e-2), corpus, tiny_peers(vocab), run, resume=False,
                       progress=False).done


def test_missing_metrics_on_resume_is_named(corpus, tmp_path):
    from dwml import train

    vocab = len(corpus.tokenizer)
    run = tmp_path / "run"
    train.train(tiny_config(), corpus, tiny_peers(vocab), run, progress=False, max_steps=2)
    metrics = run / train.METRICS
    raw = metrics.read_bytes()
    metrics.unlink()
    before = snapshot(run)
    with pytest.raises(checkpoint.CheckpointError) as err:
        train.train(tiny_config(), corpus, tiny_peers(vocab), run, progress=False)
    assert str(metrics) in str(err.value) and str(run / train.CHECKPOINT) in str(err.value)
    assert_unchanged(before, run, checkpoint.LOCK_FILE)
    metrics.write_bytes(raw[:10])  # shorter than the checkpoint recorded: a truncate would have padded zeros
    with pytest.raises(checkpoint.CheckpointError, match=rf"{metrics}: 10 bytes, shorter"):
        train.train(tiny_config(), corpus, tiny_peers(vocab), run, progress=False)
    assert metrics.read_bytes() == raw[:10]


@pytest.mark.parametrize("damage", ["truncated", "empty", "a_list"])
def test_corrupt_summary_json_is_named(corpus, tmp_path, damage):
    from dwml import train

    run = tmp_path / "run"
    train.train(tiny_config(), corpus, tiny_peers(len(corpus.tokenizer)), run, progress=False)
    summary = run / train.SUMMARY
    text = summary.read_text()
    summary.write_text({"truncated": text[: len(text) // 2], "empty": "", "a_list": "[1, 2]"}[damage])
    before = snapshot(run)
    with pytest.raises(checkpoint.CheckpointError, match=str(summary)):
        train.load_result(run)
    with pytest.raises(checkpoint.CheckpointError, match=str(summary)):
        train.train(tiny_config(), corpus, tiny_peers(len(corpus.tokenizer)), run, progress=False)
    assert_unchanged(before, run, checkpoint.LOCK_FILE)


def test_a_damaged_metrics_line_is_named(tmp_path):
    from dwml import train

    (tmp_path / train.METRICS).write_text('{"kind": "train", "step": 1}\n{"kind": "tr\n')
    with pytest.raises(ValueError, match=rf"{tmp_path / train.METRICS}:2: not a JSON line"):
        train.read_metrics(tmp_path)


@pytest.fixture
def immutable(tmp_path):
    """A folder no file can be created in, even by root (chattr +i), removed again afterwards."""
    import shutil
    import subprocess

    folder = tmp_path / "frozen"
    folder.mkdir()
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
        import os

        if os.geteuid() == 0:
            pytest.skip("neither chattr +i nor a non-root user to make a folder unwritable")
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    try:
        yield folder
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_an_unwritable_run_folder_is_named(corpus, immutable):
    from dwml import train

    with pytest.raises(checkpoint.RunFolderError) as err:
        train.train(tiny_config(), corpus, tiny_peers(len(corpus.tokenizer)), immutable, progress=False)
    assert str(immutable) in str(err.value) and "written" in str(err.value)
    assert list(immutable.iterdir()) == []


def test_the_thread_count_is_recorded_and_a_resume_under_another_warns(corpus, tmp_path):
    from dwml import train

    threads = torch.get_num_threads()
    run = tmp_path / "run"
    try:
        torch.set_num_threads(1)
        train.train(tiny_config(), corpus, tiny_peers(len(corpus.tokenizer)), run, progress=False, max_steps=2)
        assert json.loads((run / train.CONFIG).read_text())["threads"] == 1
        torch.set_num_threads(2)
        with pytest.warns(UserWarning, match=rf"{run / train.CHECKPOINT}: the run was written with 1 torch thread"):
            result = train.train(tiny_config(), corpus, tiny_peers(len(corpus.tokenizer)), run, progress=False)
        assert result.summary["threads"] == 2
    finally:
        torch.set_num_threads(threads)


WORKER = r"""
import json, sys, time
sys.path.insert(0, {tests!r})
import torch
from conftest import tiny_roberta
from dwml import train
from dwml.config import Config, DataConfig
from dwml.data import prepare_corpus

prep = prepare_corpus(DataConfig(corpus={corpus!r}, vocab_size=600, block_size=32, cache_dir={cache!r}), progress=False)
step = train.Trainer.train_step

def slow(self):  # hold the folder, mid-run, until killed
    print("training", flush=True)
    time.sleep(120)
    return step(self)

train.Trainer.train_step = slow
torch.manual_seed(0)
models = [tiny_roberta(len(prep.tokenizer), attn_implementation="eager") for _ in range(2)]
cfg = Config.from_dict(data={{"corpus": "unused", "vocab_size": 600, "block_size": 32}}, train={train_cfg!r})
train.train(cfg, prep, models, {run!r}, progress=False)
"""


def test_two_processes_on_one_run_folder(corpus, tmp_path):
    """A real second process holds the folder mid-run: this one is refused with its pid and start time, and
    once the holder is killed (SIGKILL: the kernel drops its lock, its pid stays in the file) the folder is
    taken over and the run trained here."""
    import select
    import subprocess
    import sys

    from conftest import ROOT
    from dwml import train

    run = tmp_path / "run"
    base = dict(method="dml", learning_rate=3e-3, min_lr=3e-4, warmup_iters=1, lr_decay_iters=20, batch_size=4,
                num_batches=1, num_epochs=4, eval_interval=2, eval_batches=1, checkpoint_interval=100, device="cpu")
    script = WORKER.format(tests=str(ROOT / "tests"), corpus=str(corpus.corpus_dir),
                           cache=str(corpus.tokenizer_dir.parent.parent), train_cfg=base, run=str(run))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 240)
        line = proc.stdout.readline() if ready else ""
        assert line.strip() == "training", (line, proc.poll(), proc.stderr.read() if proc.poll() is not None else "")
        holder = json.loads((run / checkpoint.LOCK_FILE).read_text())
        assert holder["pid"] == proc.pid
        before = snapshot(run)
        with pytest.raises(checkpoint.RunFolderBusyError) as err:  # another learning rate, as in the report
            train.train(tiny_config(learning_rate=1e-3), corpus, tiny_peers(len(corpus.tokenizer)), run, progress=False)
        msg = str(err.value)
        assert f"process {proc.pid}" in msg and f"started {holder['started']}" in msg and str(run) in msg
        assert snapshot(run) == before
    finally:
        proc.kill()
        proc.wait(timeout=60)
    assert json.loads((run / checkpoint.LOCK_FILE).read_text())["pid"] == proc.pid  # stale: left by the dead
    result = train.train(tiny_config(), corpus, tiny_peers(len(corpus.tokenizer)), run, progress=False)
    assert result.done and result.summary["steps"] == 4
    assert (run / checkpoint.LOCK_FILE).read_text() == ""


def test_the_lock_is_exclusive_within_one_process_too(tmp_path):
    run = tmp_path / "run"
    with checkpoint.RunLock(run):
        with pytest.raises(checkpoint.RunFolderBusyError, match=rf"{run} is in use: process \d+"):
            checkpoint.RunLock(run).acquire()
    with checkpoint.RunLock(run):  # released: taken again
        pass


# --------------------------------------------------------------------------------------------------
# Derived files carry what they were derived from
# --------------------------------------------------------------------------------------------------

def test_peers_json_searched_under_other_settings_is_refused(tmp_path):
    import dataclasses

    from dwml import search
    from dwml.config import SearchConfig

    cfg = SearchConfig(teacher_layers=2, teacher_hidden=128, teacher_heads=2, num_peers=2, method="exhaustive")
    path = tmp_path / "peers.json"
    peers, _ = search.ensure_peers(path, cfg, 600, 50, tokenizer="tok-a")
    before = snapshot(tmp_path)
    cases = [((dataclasses.replace(cfg, num_peers=3), 600, 50, {}), ["search.num_peers: file 2, now 3"]),
             ((dataclasses.replace(cfg, teacher_hidden=256), 600, 50, {}), ["search.teacher_hidden: file 128, now 256"]),
             ((dataclasses.replace(cfg, seed=4, max_layers=6), 600, 50, {}), ["search.seed", "search.max_layers"]),
             ((cfg, 700, 50, {}), ["vocabulary size", "file 600, now 700"]),
             ((cfg, 600, 66, {}), ["data.block_size + 2: file 50, now 66"]),
             ((cfg, 600, 50, {"tokenizer": "tok-b"}), ["tokenizer"])]
    for (c, vocab, positions, kw), named in cases:
        with pytest.raises(search.SearchError) as err:
            search.ensure_peers(path, c, vocab, positions, **kw)
        assert str(path) in str(err.value) and all(n in str(err.value) for n in named), str(err.value)
    assert_unchanged(before, tmp_path)
    assert search.ensure_peers(path, cfg, 600, 50, tokenizer="tok-a")[0] == peers  # the same settings: read
    # 01_peer_search searches at data.vocab_size, which the tokenizer may not fill
    other = tmp_path / "from_01.json"
    search.save_peers(other, *search.run_search(cfg, 700, 50))
    search.ensure_peers(other, cfg, 600, 50, data_vocab_size=700)
    with pytest.raises(search.SearchError, match="file 700, now 600"):
        search.ensure_peers(other, cfg, 600, 50)


def test_a_scores_cache_is_rescored_under_other_eval_settings(tmp_path, monkeypatch):
    import pandas as pd

    from dwml import evaluate, scoring
    from dwml.config import EvalConfig
    from dwml.runfolder import TrainResult

    pairs = {"synthetic": [evaluate.MinimalPair("synthetic", "agr", i, "a b", "b a") for i in range(3)]}
    calls = []

    def fake(model_dir, suites, cfg, progress):
        calls.append(cfg.reduction)
        return pd.DataFrame({"suite": "synthetic", "task": "agr", "pair_id": range(3), "correct": cfg.reduction == "sum"})

    monkeypatch.setattr(scoring, "evaluate_model", fake)
    run = tmp_path / "dml_seed0"
    run.mkdir()
    result = TrainResult(run, None, None, [run / "peer_0"], {"method": "dml"}, done=True)
    scoring.score_run(result, pairs, EvalConfig())
    scoring.score_run(result, pairs, EvalConfig(batch_size=7, bootstrap=10))  # the same scores: reused
    assert calls == ["sum"]
    with pytest.warns(UserWarning, match=rf"{run / 'scores.csv'} was scored under other settings \(eval.reduction: cached 'sum', now 'mean'"):
        again = scoring.score_run(result, pairs, EvalConfig(reduction="mean"))
    assert calls == ["sum", "mean"] and not again["correct"].any()
    other = {"synthetic": [evaluate.MinimalPair("synthetic", "agr", i, "a b", "a c") for i in range(3)]}
    with pytest.warns(UserWarning, match=r"\(pairs differ"):  # other pairs of the same count
        scoring.score_run(result, other, EvalConfig(reduction="mean"))
    assert calls == ["sum", "mean", "mean"]
    (run / "scores.csv.json").unlink()  # a cache written before the record: the counts decide, as before
    scoring.score_run(result, pairs, EvalConfig())
    assert calls == ["sum", "mean", "mean"]


# --------------------------------------------------------------------------------------------------
# Teacher compatibility (KD)
# --------------------------------------------------------------------------------------------------

def _save_teacher(folder: Path, vocab: int, tokenizer=None) -> Path:
    torch.manual_seed(5)
    tiny_roberta(vocab).save_pretrained(folder)
    if tokenizer is not None:
        tokenizer.save_pretrained(folder)
    return folder


def _shuffled_tokenizer(tokenizer, out: Path):
    """The same size, other ids: two tokens' ids swapped (what a tokenizer trained on other text looks like
    to the peers: 264 of 600 ids meant the same token in the report's case)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    raw = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = raw["model"]["vocab"]
    a, b = [t for t, i in vocab.items() if i >= 300][:2]
    vocab[a], vocab[b] = vocab[b], vocab[a]
    wrapped = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(raw)), bos_token="<s>",
                                      eos_token="</s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>")
    wrapped.save_pretrained(out)
    return wrapped


@pytest.mark.parametrize("case", ["other_ids_same_size", "other_vocab_size", "no_tokenizer", "truncated_weights"])
def test_a_kd_teacher_must_share_the_peers_tokenizer_and_vocabulary(corpus, tmp_path, case):
    from dwml import train

    vocab = len(corpus.tokenizer)
    teacher = tmp_path / "teacher"
    if case == "other_ids_same_size":
        _save_teacher(teacher, vocab)
        other = _shuffled_tokenizer(corpus.tokenizer, teacher)
        assert len(other) == vocab
        named = [str(teacher), str(corpus.tokenizer_dir), f"only {vocab - 2} of the peers' ids"]
    elif case == "other_vocab_size":
        _save_teacher(teacher, vocab + 40, corpus.tokenizer)
        named = [str(teacher), f"vocab_size {vocab + 40}", f"the peers {vocab}"]
    elif case == "no_tokenizer":
        _save_teacher(teacher, vocab)
        named = [str(teacher), "no tokenizer.json", str(corpus.tokenizer_dir)]
    else:
        _save_teacher(teacher, vocab, corpus.tokenizer)
        weights = teacher / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        named = [str(teacher), "cannot be loaded"]
    before = snapshot(teacher)
    with pytest.raises(ConfigError) as err:
        train.train(tiny_config(method="kd", teacher_dir=str(teacher)), corpus, tiny_peers(vocab, n=1), tmp_path / "run",
                    progress=False)
    for n in named + ["train.teacher_dir"]:
        assert n in str(err.value), (n, str(err.value))
    assert_unchanged(before, teacher)
    assert not (tmp_path / "run" / train.METRICS).exists() and not (tmp_path / "run" / train.CONFIG).exists()


def test_a_teacher_module_of_another_vocabulary_size_is_named(corpus, tmp_path):
    from dwml import train

    vocab = len(corpus.tokenizer)
    torch.manual_seed(5)
    with pytest.raises(ConfigError, match=rf"the teacher given: the teacher has vocab_size {vocab + 8}, the peers {vocab}"):
        train.train(tiny_config(method="kd"), corpus, tiny_peers(vocab, n=1), tmp_path / "run",
                    teacher=tiny_roberta(vocab + 8), progress=False)


# --------------------------------------------------------------------------------------------------
# Evaluation: errors name the folder, file or pair
# --------------------------------------------------------------------------------------------------

def _saved_model(folder: Path, vocab: int, tokenizer, positions: int = 36) -> Path:
    torch.manual_seed(0)
    tiny_roberta(vocab, positions=positions).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("cut", [0.5, 0.02, 0])
def test_a_truncated_model_safetensors_is_named(corpus, tmp_path, cut):
    from dwml import evaluate

    folder = _saved_model(tmp_path / "model", len(corpus.tokenizer), corpus.tokenizer)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: int(weights.stat().st_size * cut)])
    before = snapshot(folder)
    with pytest.raises(evaluate.EvalDataError) as err:
        evaluate.load_masked_lm(folder)
    assert str(folder) in str(err.value) and "model.safetensors" in str(err.value) and "truncated or corrupt" in str(err.value)
    assert_unchanged(before, folder)


def test_a_tokenizer_larger_than_the_embeddings_is_named(corpus, tmp_path):
    from dwml import evaluate

    folder = _saved_model(tmp_path / "model", 300, corpus.tokenizer)  # 300 embeddings, a 600-id tokenizer
    with pytest.raises(evaluate.EvalDataError, match=rf"{folder}: the tokenizer has {len(corpus.tokenizer)} ids but "
                                                      r"the model's embeddings only 300"):
        evaluate.load_masked_lm(folder)


def test_a_sentence_longer_than_the_positions_names_its_pair(corpus):
    from dwml import evaluate

    torch.manual_seed(0)
    model = tiny_roberta(len(corpus.tokenizer)).eval()  # 36 positions: 34 tokens
    long = " ".join(["the big dog sees the small cat"] * 10)
    pairs = [evaluate.MinimalPair("synthetic", "agr", 3, "the cat runs", "the cat run"),
             evaluate.MinimalPair("synthetic", "npi", 17, "the dog sees", long)]
    with pytest.raises(ValueError, match=r"synthetic task npi pair_id 17, the bad sentence .* more than the 34 positions"):
        evaluate.score_pairs(model, corpus.tokenizer, pairs, progress=False)
