"""The data path (dwml.corpus, dwml.tokenizer, dwml.tokens, dwml.batches, dwml.data): reading, tokenizer round
trip, token cache, masking statistics, clear errors."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from dwml.batches import MLMBatcher, mask_tokens
from dwml.corpus import DataError, clean_line, corpus_files, corpus_stats, read_corpus
from dwml.data import prepare_corpus
from dwml.losses import IGNORE_INDEX
from dwml.tokenizer import BOS_ID, EOS_ID, MASK_ID, PAD_ID, SPECIAL_TOKENS, load_tokenizer, normalize, train_tokenizer
from dwml.tokens import build_token_cache, decode_cache, sources_meta, token_dtype
from dwml.config import DataConfig


def test_clean_line_and_markers():
    assert clean_line("  where   is\tthe ball ") == "where is the ball"
    assert clean_line("xxx look at yyy that", drop_markers=True) == "look at that"
    assert clean_line("xxx yyy", drop_markers=True) == ""
    assert clean_line("xxx look", drop_markers=False) == "xxx look"


def test_read_corpus_layout(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "a.train").write_text("hello there\n\n  \nxxx\nsee  the dog\n")
    (tmp_path / "train" / "b.train").write_text("b line\n")
    (tmp_path / "dev.dev").write_text("dev line\n")
    assert read_corpus(tmp_path, "train") == ["hello there", "xxx", "see the dog", "b line"]
    assert read_corpus(tmp_path, "train", drop_markers=True) == ["hello there", "see the dog", "b line"]
    assert read_corpus(tmp_path, "dev") == ["dev line"]
    stats = corpus_stats(tmp_path, "train")
    assert stats.set_index("file").loc["total", "words"] == 8
    assert stats.set_index("file").loc["a.train", "lines"] == 3


def test_missing_and_empty_corpus_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_corpus(tmp_path / "nope")
    with pytest.raises(DataError, match=r"no \*\.train files"):
        read_corpus(tmp_path)
    (tmp_path / "x.train").write_text("\n  \n")
    with pytest.raises(DataError, match="empty"):
        read_corpus(tmp_path)


def test_non_utf8_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.train"
    bad.write_bytes(b"fine line\nsecond line\nthird \xff\xfe line\n")
    with pytest.raises(DataError, match=r"bad\.train:3: not UTF-8"):
        read_corpus(tmp_path)


def test_vocab_too_small_names_parameter():
    with pytest.raises(DataError, match="vocab_size=100"):
        train_tokenizer(["a b c"], vocab_size=100)


def test_tokenizer_reloads_to_identical_ids(small_corpus, small_tokenizer):
    from transformers import AutoTokenizer

    lines = read_corpus(small_corpus, "dev")[:200] + ["The BIG Dog, Café!", "  spaced   out  "]
    reloaded = AutoTokenizer.from_pretrained(str(small_tokenizer), local_files_only=True)
    fresh = train_tokenizer(read_corpus(small_corpus, "train"), vocab_size=600)
    for line in lines:
        ids = reloaded(line)["input_ids"]
        assert ids == fresh(line)["input_ids"], line
        assert ids[0] == BOS_ID and ids[-1] == EOS_ID
    # the normaliser travels with the saved tokenizer: lower-casing applies after reloading
    assert reloaded("The Dog")["input_ids"] == reloaded("the dog")["input_ids"]
    assert [reloaded.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert reloaded.mask_token_id == MASK_ID and reloaded.pad_token_id == PAD_ID


def test_token_cache_decodes_to_normalised_corpus(small_corpus, small_tokenizer, tmp_path):
    tok = load_tokenizer(small_tokenizer)
    files = corpus_files(small_corpus, "train")
    cache = build_token_cache(files, tok, tmp_path / "train.bin")
    lines = read_corpus(small_corpus, "train")
    assert decode_cache(cache, tok) == [normalize(tok, l) for l in lines]
    # its length equals the tokenizer's own count (+1 separator per line)
    expected = sum(len(tok(l, add_special_tokens=False)["input_ids"]) + 1 for l in lines)
    assert len(cache) == expected == cache.meta["n_tokens"]
    assert cache.tokens.dtype == np.uint16 and cache.meta["dtype"] == "uint16"
    side = json.loads((tmp_path / "train.bin.json").read_text())
    assert side["vocab_size"] == len(tok) and side["sources"][0]["sha256"]


def test_token_cache_reused_rebuilt_on_change_and_on_bad_size(small_tokenizer, tmp_path):
    tok = load_tokenizer(small_tokenizer)
    src = tmp_path / "c.train"
    src.write_text("the dog sleeps\nthe cats run\n")
    cache = build_token_cache([src], tok, tmp_path / "c.bin")
    mtime = (tmp_path / "c.bin").stat().st_mtime_ns
    assert build_token_cache([src], tok, tmp_path / "c.bin").meta == cache.meta
    assert (tmp_path / "c.bin").stat().st_mtime_ns == mtime  # reused, not rewritten
    src.write_text("the dog sleeps\nthe cats run\nthe bird sings\n")
    grown = build_token_cache([src], tok, tmp_path / "c.bin")
    assert grown.meta["n_lines"] == 3 and len(grown) > len(cache)
    with open(tmp_path / "c.bin", "ab") as fh:  # corrupt: size disagrees with the sidecar
        fh.write(b"\x00\x00")
    with pytest.warns(UserWarning, match="rebuilding"):
        fixed = build_token_cache([src], tok, tmp_path / "c.bin")
    assert (tmp_path / "c.bin").stat().st_size == len(fixed) * 2
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_sources_meta_is_each_files_path_hash_and_size(tmp_path):
    files = [tmp_path / "a.train", tmp_path / "b.train"]
    files[0].write_bytes(b"the dog\n")
    files[1].write_bytes("caf\u00e9\n".encode())
    assert sources_meta(files) == [{"path": str(f), "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
                                    "bytes": len(f.read_bytes())} for f in files]
    assert sources_meta(files)[1]["bytes"] == 6


def test_token_dtype():
    assert token_dtype(8192) == np.uint16 and token_dtype(65536) == np.uint16
    assert token_dtype(65537) == np.uint32


def test_masking_rates_over_1e5_tokens():
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (100, 1000), generator=g)
    ids[:, 0], ids[:, -1], ids[:, 500] = BOS_ID, EOS_ID, EOS_ID
    masked, labels = mask_tokens(ids, 1000, g)
    selected = labels != IGNORE_INDEX
    special = ids < 5
    assert not selected[special].any(), "a special token was selected"
    assert torch.equal(masked[special], ids[special]), "a special token was changed"
    rate = selected.sum().item() / (~special).sum().item()
    assert abs(rate - 0.15) < 0.01, rate
    n = selected.sum().item()
    to_mask = (masked == MASK_ID) & selected
    kept = (masked == ids) & selected
    random = selected & ~to_mask & ~kept
    assert abs(to_mask.sum().item() / n - 0.8) < 0.01
    # a random replacement can draw the original token (p = 1/995); count those as random, not kept
    assert abs(kept.sum().item() / n - 0.1) < 0.01 + 1 / 995
    assert abs(random.sum().item() / n - 0.1) < 0.01
    assert torch.equal(labels[selected], ids[selected])
    assert (masked[random] >= 5).all(), "random replacements must be ordinary tokens"


def test_batcher_shapes_determinism_and_resume():
    tokens = np.arange(5, 2005, dtype=np.uint16)
    b = MLMBatcher(tokens, vocab_size=3000, block_size=32, batch_size=4, seed=7)
    first = b.next_batch()
    assert first["input_ids"].shape == (4, 32) and first["labels"].shape == (4, 32)
    assert (first["input_ids"][:, 0] == BOS_ID).all() and (first["input_ids"][:, -1] == EOS_ID).all()
    assert (first["attention_mask"] == 1).all()
    # unmasked positions are a contiguous slice of the stream
    row = first["input_ids"][0, 1:-1]
    lab = first["labels"][0, 1:-1]
    orig = torch.where(lab != -100, lab, row)
    assert torch.equal(orig[1:] - orig[:-1], torch.ones(29, dtype=orig.dtype))
    state = b.state_dict()
    nxt = b.next_batch()
    b.load_state_dict(state)
    again = b.next_batch()
    assert nxt.keys() == again.keys()
    assert all(torch.equal(nxt[k], again[k]) if torch.is_tensor(nxt[k]) else nxt[k] == again[k] for k in nxt)
    fixed1, fixed2 = b.fixed_batches(2), b.fixed_batches(2)
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(fixed1, fixed2))


def test_block_larger_than_corpus_names_parameter():
    with pytest.raises(DataError, match="block_size=600 is larger than the corpus"):
        MLMBatcher(np.arange(5, 100, dtype=np.uint16), vocab_size=200, block_size=600)


def test_prepare_corpus_caches_and_errors(small_corpus, tmp_path):
    cfg = DataConfig(corpus=str(small_corpus), vocab_size=600, block_size=64, cache_dir=str(tmp_path / "cache"))
    prep = prepare_corpus(cfg, progress=False)
    assert len(prep.train) > 10 * len(prep.dev) / 2 > 0
    assert (prep.tokenizer_dir / "tokenizer.json").is_file()
    again = prepare_corpus(cfg, progress=False)
    assert again.tokenizer_dir == prep.tokenizer_dir and again.train.meta == prep.train.meta
    batch = prep.batcher("train", cfg, batch_size=2, seed=0).next_batch()
    assert batch["input_ids"].shape == (2, 64)
    with pytest.raises(DataError, match="data.corpus"):
        prepare_corpus(DataConfig(corpus=str(tmp_path / "missing")))
    with pytest.raises(DataError, match="data.block_size=100000"):
        prepare_corpus(DataConfig(corpus=str(small_corpus), vocab_size=600, block_size=100_000,
                                    cache_dir=str(tmp_path / "cache")), progress=False)


@pytest.mark.data
def test_shared_corpus_reads_and_tokenizes(shared_data, tmp_path):
    corpus = shared_data / "corpus"
    stats = corpus_stats(corpus, "train").set_index("file")
    assert stats.loc["total", "lines"] > 190_000
    cfg = DataConfig(corpus=str(corpus), vocab_size=8192, block_size=128, cache_dir=str(tmp_path))
    prep = prepare_corpus(cfg, progress=False)
    lines = read_corpus(corpus, "dev")
    assert decode_cache(prep.dev, prep.tokenizer) == [normalize(prep.tokenizer, l) for l in lines]


def test_lines_packing_gives_one_padded_utterance_per_sequence():
    from dwml.batches import MLMBatcher
    from dwml.tokenizer import BOS_ID, EOS_ID, PAD_ID

    # stream: three utterances of lengths 3, 1, 5, each followed by </s>
    stream = np.array([10, 11, 12, EOS_ID, 13, EOS_ID, 14, 15, 16, 17, 18, EOS_ID], dtype=np.uint16)
    b = MLMBatcher(stream, vocab_size=40, block_size=6, batch_size=64, packing="lines", seed=0,
                   mlm_probability=0.01)  # almost nothing masked: the structure is visible
    batch = b.next_batch()
    am = batch["attention_mask"]
    ids = torch.where(batch["labels"] != -100, batch["labels"], batch["input_ids"])  # undo the masking
    assert ids.shape[1] == 6  # the longest utterance (5) is cut to block_size - 2 = 4, + <s> </s>
    assert (am == (ids != PAD_ID).long()).all()
    seen = set()
    for row, mask in zip(ids.tolist(), am.tolist()):
        n = sum(mask)
        assert row[0] == BOS_ID and row[n - 1] == EOS_ID and all(t == PAD_ID for t in row[n:])
        seen.add(tuple(row[1:n - 1]))
    assert seen <= {(10, 11, 12), (13,), (14, 15, 16, 17)} and len(seen) == 3
    big = MLMBatcher(stream, vocab_size=40, block_size=6, batch_size=256, packing="lines", seed=1,
                     mlm_probability=0.5).next_batch()
    predicted = big["labels"][big["labels"] != -100]
    assert len(predicted) > 100 and (predicted >= 5).all()  # specials and padding are never predicted
    with pytest.raises(Exception, match="packing"):
        MLMBatcher(stream, vocab_size=40, block_size=6, packing="sentences")


def test_batches_per_pass_counts_the_corpus_as_a_batch_draws_it():
    from dwml.batches import MLMBatcher
    from dwml.tokenizer import EOS_ID

    # 40 utterances of 1-4 tokens and 8 empty ones (</s> after </s>), which no batch can draw
    rng = np.random.default_rng(0)
    stream = []
    for n in rng.integers(1, 5, size=40):
        stream += [10] * int(n) + [EOS_ID]
    stream += [EOS_ID] * 8
    stream = np.array(stream, dtype=np.uint16)
    utterances = sum(1 for a, b in zip(stream[:-1], stream[1:]) if a != EOS_ID and b == EOS_ID)  # direct count
    assert utterances == 40
    for packing in ("lines", "packed"):
        b = MLMBatcher(stream, vocab_size=40, block_size=8, batch_size=8, packing=packing)
        assert b.batches_per_pass() == 5  # 40 utterances / 8 a batch (48 with the empty ones: 6)
    assert MLMBatcher(stream, vocab_size=40, block_size=8, batch_size=64, packing="lines").batches_per_pass() == 1
    blocks = MLMBatcher(stream, vocab_size=40, block_size=8, batch_size=2, packing="blocks")
    assert blocks.batches_per_pass() == round(len(stream) / (2 * 6))  # stream tokens / (batch x (block - 2))


def test_length_grouping_cuts_padding_keeps_the_draw_and_resumes_mid_group():
    from dwml.batches import MLMBatcher
    from dwml.tokenizer import EOS_ID

    rng = np.random.default_rng(0)
    stream = []
    for _ in range(500):  # utterances of 1..20 tokens
        stream += list(rng.integers(10, 40, rng.integers(1, 21))) + [EOS_ID]
    stream = np.array(stream, dtype=np.uint16)
    kw = dict(vocab_size=40, block_size=24, batch_size=16, packing="lines")

    def real_share(b, n):
        am = [b.next_batch()["attention_mask"] for _ in range(n)]
        return sum(int(a.sum()) for a in am) / sum(a.numel() for a in am)

    plain, grouped = MLMBatcher(stream, seed=3, **kw), MLMBatcher(stream, seed=3, length_grouping=8, **kw)
    assert real_share(grouped, 80) > real_share(plain, 80) + 0.25  # far less padding

    # every utterance is still drawn uniformly: real tokens per sequence average the corpus's mean length
    lengths = np.diff(np.concatenate([[-1], np.flatnonzero(stream == EOS_ID)])) - 1 + 2
    b = MLMBatcher(stream, seed=4, length_grouping=8, **kw)
    per_seq = torch.cat([b.next_batch()["attention_mask"].sum(1) for _ in range(400)]).float()
    assert abs(per_seq.mean().item() - lengths.mean()) < 0.3

    # a batcher restored mid-group serves exactly the batches the original would have served
    a = MLMBatcher(stream, seed=5, length_grouping=8, **kw)
    for _ in range(3):
        a.next_batch()
    state = a.state_dict()
    want = [a.next_batch()["input_ids"] for _ in range(10)]
    c = MLMBatcher(stream, seed=99, length_grouping=8, **kw)
    c.load_state_dict(state)
    assert all(torch.equal(x, c.next_batch()["input_ids"]) for x in want)
    # fixed (dev) batches neither depend on nor disturb the pending group
    d = MLMBatcher(stream, seed=5, length_grouping=8, **kw)
    d.load_state_dict(state)
    fixed = d.fixed_batches(3)
    assert all(torch.equal(x, y["input_ids"]) for x, y in zip([f["input_ids"] for f in a.fixed_batches(3)], fixed))
    assert torch.equal(d.next_batch()["input_ids"], want[0])
    with pytest.raises(Exception, match="length_grouping"):
        MLMBatcher(stream, length_grouping=0, **kw)


def test_atomic_dir_replaces_a_folder_whole_or_not_at_all(tmp_path):
    from dwml.io import atomic_dir

    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "old.txt").write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_dir(dest) as tmp:
            (tmp / "new.txt").write_text("new")
            raise RuntimeError("interrupted")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and (dest / "old.txt").read_text() == "old"
    with atomic_dir(dest) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (dest / "new.txt").exists()  # nothing shows until the block ends
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"] and sorted(p.name for p in dest.iterdir()) == ["new.txt"]


def test_temporary_environ_sets_and_restores_even_on_error(monkeypatch):
    import os

    from dwml.io import temporary_environ

    monkeypatch.setenv("DWML_T_KEPT", "before")
    monkeypatch.delenv("DWML_T_NEW", raising=False)
    with pytest.raises(RuntimeError):
        with temporary_environ({"DWML_T_KEPT": "during", "DWML_T_NEW": "1"}):
            assert os.environ["DWML_T_KEPT"] == "during" and os.environ["DWML_T_NEW"] == "1"
            raise RuntimeError("inside")
    assert os.environ["DWML_T_KEPT"] == "before" and "DWML_T_NEW" not in os.environ
