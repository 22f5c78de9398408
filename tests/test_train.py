"""dwml.train: the one loop. Resume is bit-exact, bad input stops with a clear error, peers reload.

Tiny models (hidden 32, 2 layers) on a 30k-word synthetic corpus; every test takes seconds on a CPU.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from dwml import train
from dwml.checkpoint import CheckpointMismatchError
from dwml.optim import cosine_schedule
from dwml.config import Config, ConfigError
from conftest import tiny_roberta

BLOCK = 32


@pytest.fixture(scope="module")
def corpus(small_corpus, tmp_path_factory):
    from dwml.data import prepare_corpus
    from dwml.config import DataConfig

    cache = tmp_path_factory.mktemp("cache")
    return prepare_corpus(DataConfig(corpus=str(small_corpus), vocab_size=600, block_size=BLOCK,
                                     cache_dir=str(cache)), progress=False)


def tiny_peers(vocab: int, n: int = 2, seed: int = 0, layers=(2, 1), hidden=(32, 16)):
    torch.manual_seed(seed)
    return [tiny_roberta(vocab, layers[i % len(layers)], hidden[i % len(hidden)], positions=BLOCK + 4,
                         attn_implementation="eager") for i in range(n)]


def tiny_config(**train) -> Config:
    base = dict(method="dwml", learning_rate=3e-3, min_lr=3e-4, warmup_iters=2, lr_decay_iters=20, batch_size=4,
                num_batches=2, num_epochs=6, weight_update_frequency=2, eval_interval=3, eval_batches=2,
                checkpoint_interval=100, step_size=0.5, min_step_size=0.05, device="cpu")
    base.update(train)
    return Config.from_dict(data={"corpus": "unused", "vocab_size": 600, "block_size": BLOCK}, train=base)


def params(models):
    return [p.detach().clone() for m in models for p in m.state_dict().values()]


@pytest.mark.parametrize("outer_grad", ["reuse", "recompute"])
def test_resumed_run_equals_uninterrupted_run(corpus, tmp_path, outer_grad):
    """Stop after 3 of 6 steps (an outer step and an evaluation on each side), resume with freshly
    initialised models of another seed: the end state must equal the uninterrupted run's bit for bit."""
    cfg = tiny_config(outer_grad=outer_grad)
    vocab = len(corpus.tokenizer)
    full_models = tiny_peers(vocab)
    full = train.train(cfg, corpus, full_models, tmp_path / "full", progress=False)

    part = train.train(cfg, corpus, tiny_peers(vocab), tmp_path / "split", progress=False, max_steps=3)
    assert not part.done and not (tmp_path / "split" / train.DONE).exists()
    resumed_models = tiny_peers(vocab, seed=123)  # other init: everything must come from the checkpoint
    resumed = train.train(cfg, corpus, resumed_models, tmp_path / "split", progress=False)

    assert resumed.done and resumed.summary["steps"] == 6
    assert full.weights == resumed.weights
    assert full.weights != [0.5, 0.5], "the outer steps should have moved w"
    for a, b in zip(params(full_models), params(resumed_models)):
        assert torch.equal(a, b)
    drop = ["tokens_per_s", "elapsed_s"]
    h1, h2 = full.history.drop(columns=drop), resumed.history.drop(columns=drop)
    assert h1.to_json() == h2.to_json()  # the same metrics lines, none doubled by the resume


def test_metrics_schedule_and_saved_peers(corpus, tmp_path):
    from transformers import AutoModelForMaskedLM, AutoTokenizer

    cfg = tiny_config(num_epochs=4, eval_interval=2)
    models = tiny_peers(len(corpus.tokenizer))
    res = train.train(cfg, corpus, models, tmp_path / "run", progress=False)
    rows = [json.loads(l) for l in (tmp_path / "run" / train.METRICS).read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in train_rows] == [1, 2, 3, 4]
    assert [r["step"] for r in evals] == [0, 2, 4]
    t = cfg.train
    for r in train_rows:  # the logged lr and eta are the schedule at the step taken (0-based step - 1)
        assert r["lr"] == pytest.approx(cosine_schedule(r["step"] - 1, t.learning_rate, t.min_lr, t.warmup_iters, t.lr_decay_iters))
        assert r["eta"] == pytest.approx(cosine_schedule(r["step"] - 1, t.step_size, t.min_step_size, t.warmup_iters, t.lr_decay_iters))
        assert len(r["ce"]) == len(r["kl"]) == len(r["w"]) == 2
        assert r["tokens"] == r["step"] * t.num_batches * t.batch_size * BLOCK
        assert r["tokens_per_s"] > 0
        assert ("hypergrad" in r) == (r["step"] % t.weight_update_frequency == 0)
    # w changes exactly at the outer steps, by eq. 4 applied to the logged hypergradient
    w_prev = [0.5, 0.5]
    for r in train_rows:
        if "hypergrad" in r:
            e = [wi * math.exp(-r["eta"] * gi) for wi, gi in zip(w_prev, r["hypergrad"])]
            assert r["w"] == pytest.approx([x / sum(e) for x in e], rel=1e-5)
        else:
            assert r["w"] == pytest.approx(w_prev)
        w_prev = r["w"]
    # each peer saved beside the tokenizer, reloadable with the Auto classes, identical outputs
    batch = corpus.batcher("dev", cfg.data, 2, seed=5).next_batch()
    for i, m in enumerate(models):
        loaded = AutoModelForMaskedLM.from_pretrained(res.peer_dirs[i]).eval()
        AutoTokenizer.from_pretrained(res.peer_dirs[i])
        m.eval()
        with torch.no_grad():
            a = m(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            b = loaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        torch.testing.assert_close(a, b)
    assert res.summary["final_dev_ce"] == evals[-1]["dev_ce"]
    # a second call on a finished run returns it without training
    again = train.train(cfg, corpus, tiny_peers(len(corpus.tokenizer)), tmp_path / "run", progress=False)
    assert again.done and again.weights == res.weights


def test_optimizer_decays_matrices_only():
    """AdamW with a zero gradient moves nothing but the decay: a matrix shrinks by (1 - lr * wd) exactly
    (closed form), a bias or LayerNorm gain stays."""
    model = tiny_peers(100, n=1)[0]
    opt = train.make_optimizer([model], lr=0.1, weight_decay=0.5, betas=(0.9, 0.95))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    for n, p in model.named_parameters():
        want = before[n] * (1 - 0.1 * 0.5) if p.dim() >= 2 else before[n]
        torch.testing.assert_close(p.detach(), want, msg=n)
    assert any(p.dim() < 2 for p in model.parameters()) and any(p.dim() >= 2 for p in model.parameters())


def test_gradient_accumulation_and_per_peer_clipping(corpus, tmp_path, monkeypatch):
    """One step of the loop equals a hand-made step: the mean of the micro-batches' gradients, each peer
    clipped to grad_clip on its own, then AdamW (first step: -lr * sign-like update on the clipped grad)."""
    cfg = tiny_config(method="mlm", num_epochs=1, num_batches=3, grad_clip=0.05, weight_decay=0.0,
                      eval_interval=100, warmup_iters=0)
    vocab = len(corpus.tokenizer)
    models, ref = tiny_peers(vocab), tiny_peers(vocab)
    train.set_dropout(models + ref, 0.0)  # no dropout: the hand-made step must see the same function
    train.train(cfg, corpus, models, tmp_path / "run", progress=False)
    batcher = corpus.batcher("train", cfg.data, cfg.train.batch_size, seed=cfg.train.seed)
    batches = [batcher.next_batch() for _ in range(3)]
    lr = cosine_schedule(0, cfg.train.learning_rate, cfg.train.min_lr, 0, cfg.train.lr_decay_iters)
    for m, trained in zip(ref, models):
        grads = [torch.zeros_like(p) for p in m.parameters()]
        for b in batches:
            logits = m(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            keep = b["labels"] != -100
            logp = torch.log_softmax(logits[keep], -1)
            ce = -logp.gather(1, b["labels"][keep][:, None]).mean()
            for g, gi in zip(grads, torch.autograd.grad(ce, list(m.parameters()))):
                g += gi / 3
        norm = torch.sqrt(sum((g ** 2).sum() for g in grads))
        assert norm > 0.05, "the test needs clipping to bite"
        scale = 0.05 / (norm + 1e-6)
        with torch.no_grad():
            for p, g, q in zip(m.parameters(), grads, trained.parameters()):
                g = g * scale
                # Adam's first step with bias correction: m_hat = g, v_hat = g^2
                want = p - lr * g / (g.abs() + 1e-8)
                torch.testing.assert_close(q, want, atol=2e-5, rtol=1e-4)


def test_outer_step_reuses_the_unclipped_gradient_of_the_step(corpus, tmp_path, monkeypatch):
    """train.outer_grad='reuse': the outer step runs after the step's backward and before clipping and
    AdamW, on the step's own batch; .grad then is grad L1 at the current theta and w, so (no dropout) the
    hypergradient equals the one recomputed from scratch on that batch."""
    from dwml import bilevel
    from dwml.losses import inner_loss

    cfg = tiny_config(num_batches=1, num_epochs=4, grad_clip=1e-4, loss_alpha=0.4)
    models = tiny_peers(len(corpus.tokenizer))
    train.set_dropout(models, 0.0)
    real, calls = bilevel.hypergradient, []

    def spy(models_, train_batch, dev_batch, weights, **kw):
        assert kw["reuse_grad"] is True
        got = real(models_, train_batch, dev_batch, weights, **kw)
        # the gradient in .grad: that of eq. 2 at this theta and w on this batch, not yet clipped
        keep = train_batch["labels"] != -100
        logits = [m(input_ids=train_batch["input_ids"], attention_mask=train_batch["attention_mask"]).logits[keep]
                  for m in models_]
        loss = inner_loss(logits, train_batch["labels"][keep], weights, 0.4).total
        ps = [q for m in models_ for q in m.parameters()]
        want = torch.autograd.grad(loss, ps)
        for q, g in zip(ps, want):
            torch.testing.assert_close(q.grad, g, rtol=1e-4, atol=1e-7)
        assert torch.sqrt(sum((g ** 2).sum() for g in want)) > 1e-3, "clipping would have shrunk it"
        fresh = real(models_, train_batch, dev_batch, weights, **{**kw, "reuse_grad": False})
        torch.testing.assert_close(got, fresh, rtol=1e-4, atol=1e-6)
        calls.append(got)
        return got

    monkeypatch.setattr(bilevel, "hypergradient", spy)
    res = train.train(cfg, corpus, models, tmp_path / "run", progress=False)
    assert len(calls) == 2  # steps 2 and 4 (weight_update_frequency 2)
    hyper = res.history.dropna(subset=["hypergrad"])
    assert hyper["step"].tolist() == [2, 4]
    torch.testing.assert_close(torch.tensor(hyper["hypergrad"].tolist()), torch.stack(calls).float())


def test_nan_loss_stops_naming_step_and_peer_and_keeps_checkpoint(corpus, tmp_path, monkeypatch):
    from dwml import methods

    cfg = tiny_config(num_epochs=6, checkpoint_interval=1, eval_interval=100)
    original, calls = methods.DML.loss, {"n": 0}

    def poisoned(self, batch):  # peer 1's loss turns infinite in the first micro-batch of step 3
        loss, parts = original(self, batch)
        calls["n"] += 1
        if calls["n"] == 2 * cfg.train.num_batches + 1:
            parts = {**parts, "ce": parts["ce"].clone().index_fill_(0, torch.tensor([1]), float("inf"))}
            loss = loss + float("inf")
        return loss, parts

    monkeypatch.setattr(methods.DML, "loss", poisoned)
    with pytest.raises(FloatingPointError, match=r"step 3, peer 1: non-finite training loss"):
        train.train(cfg, corpus, tiny_peers(len(corpus.tokenizer)), tmp_path / "run", progress=False)
    ck = torch.load(tmp_path / "run" / train.CHECKPOINT, weights_only=True)
    assert ck["state"]["step"] == 2
    assert all(torch.isfinite(v).all() for sd in ck["models"] for v in sd.values())
    assert not (tmp_path / "run" / train.DONE).exists()


def test_checkpoint_from_another_configuration_is_refused(corpus, tmp_path):
    vocab = len(corpus.tokenizer)
    train.train(tiny_config(), corpus, tiny_peers(vocab), tmp_path / "run", progress=False, max_steps=2)
    with pytest.raises(CheckpointMismatchError, match=r"train\.learning_rate: checkpoint 0\.003, now 0\.001"):
        train.train(tiny_config(learning_rate=1e-3), corpus, tiny_peers(vocab), tmp_path / "run", progress=False)
    with pytest.raises(CheckpointMismatchError, match=r"peer\(s\) \[1\]"):
        train.train(tiny_config(), corpus, tiny_peers(vocab, hidden=(32, 32)), tmp_path / "run", progress=False)
    # harmless fields (length of the run, device, logging) may change
    train.train(tiny_config(num_epochs=3, log_interval=2), corpus, tiny_peers(vocab), tmp_path / "run", progress=False)
    # a finished run is not reused on another text under the same settings (a new grammar version, say)
    import dataclasses

    other = dataclasses.replace(corpus, dev=corpus.train)
    with pytest.raises(CheckpointMismatchError, match=r"corpus: checkpoint .*'dev_tokens'"):
        train.train(tiny_config(num_epochs=3), other, tiny_peers(vocab), tmp_path / "run", progress=False)


def test_dropout_setting_reaches_every_module_and_the_saved_config(corpus, tmp_path):
    from transformers import AutoModelForMaskedLM

    vocab = len(corpus.tokenizer)
    models = tiny_peers(vocab)
    assert all(mod.p == 0.1 for m in models for mod in m.modules() if isinstance(mod, torch.nn.Dropout))
    res = train.train(tiny_config(method="dml", num_epochs=2, dropout=0.0), corpus, models, tmp_path / "run", progress=False)
    # the train-mode forward is now deterministic: nothing drops
    b = corpus.batcher("train", tiny_config().data, 4, seed=0).next_batch()
    m = models[0].train()
    kw = dict(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
    assert torch.equal(m(**kw).logits, m(**kw).logits)
    saved = AutoModelForMaskedLM.from_pretrained(res.peer_dirs[0])
    assert saved.config.hidden_dropout_prob == 0.0 and saved.config.attention_probs_dropout_prob == 0.0
    # None (the default) leaves the models' own dropout alone
    others = tiny_peers(vocab)
    train.train(tiny_config(method="dml", num_epochs=1), corpus, others, tmp_path / "keep", progress=False)
    assert all(mod.p == 0.1 for m in others for mod in m.modules() if isinstance(mod, torch.nn.Dropout))


def test_bad_inputs_are_named(corpus, tmp_path):
    vocab = len(corpus.tokenizer)
    with pytest.raises(ConfigError, match="train.loss_alpha"):
        tiny_config(loss_alpha=1.5)
    for bad in (1.0, -0.1, "0.1"):
        with pytest.raises(ConfigError, match="train.dropout"):
            tiny_config(dropout=bad)
    with pytest.raises(ConfigError, match="train.outer_grad"):
        tiny_config(outer_grad="fresh")
    with pytest.raises(ValueError, match="weights"):
        train.train(tiny_config(method="dml"), corpus, tiny_peers(vocab), tmp_path / "a", progress=False,
                weights=[0.7, 0.7])
    with pytest.raises(ConfigError, match="vocab_size"):
        train.train(tiny_config(), corpus, tiny_peers(vocab - 10), tmp_path / "b", progress=False)
    with pytest.raises(ConfigError, match="train.teacher_dir"):
        train.train(tiny_config(method="kd", teacher_dir=str(tmp_path / "none")), corpus, tiny_peers(vocab),
                tmp_path / "c", progress=False)


def test_early_stopping_counts_evaluations_without_improvement(corpus, tmp_path, monkeypatch):
    """With dev ensemble losses 5, 4, 4.5, 4.2, 4.1 and patience 3, the run stops at the 4th evaluation
    after the best (step 0 = init, then one every step)."""
    from dwml import methods

    seq = iter([5.0, 4.0, 4.5, 4.2, 4.1, 3.0, 2.0])
    monkeypatch.setattr(methods.Method, "eval_losses", lambda self, b: {"dev_ce": [0.0] * self.p, "dev_ensemble": next(seq)})
    cfg = tiny_config(method="dml", num_epochs=10, eval_interval=1, patience=3, num_batches=1)
    res = train.train(cfg, corpus, tiny_peers(len(corpus.tokenizer)), tmp_path / "run", progress=False)
    assert res.summary["stopped_early"] and res.summary["steps"] == 4


@pytest.mark.gpu
def test_cuda_mixed_precision_and_compile_run(corpus, tmp_path):
    """On a GPU: bf16 autocast and torch.compile train, and the saved peers are plain fp32 modules."""
    cfg = tiny_config(device="cuda", mixed_precision=True, compile=True, num_epochs=4)
    res = train.train(cfg, corpus, tiny_peers(len(corpus.tokenizer)), tmp_path / "run", progress=False)
    evals = res.history[res.history["kind"] == "eval"]
    assert all(math.isfinite(x) for x in evals["dev_ensemble"])
    assert res.summary["final_dev_ensemble"] < evals["dev_ensemble"].iloc[0]


def test_cpu_mixed_precision_runs_in_bf16_and_keeps_fp32_weights(corpus, tmp_path, monkeypatch):
    """On the CPU, mixed_precision autocasts the forward passes to bf16 (the loss the method sees is bf16
    logits' loss), the weights stay fp32, the outer step still runs in fp32, and training still learns."""
    from dwml import methods

    seen = []
    original = methods.DWML.loss

    def spy(self, batch):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return original(self, batch)

    monkeypatch.setattr(methods.DWML, "loss", spy)
    cfg = tiny_config(device="cpu", mixed_precision=True, num_epochs=4, learning_rate=1e-2)
    peers = tiny_peers(len(corpus.tokenizer))
    res = train.train(cfg, corpus, peers, tmp_path / "run", progress=False)
    assert seen and all(d == torch.bfloat16 for d in seen)
    assert all(p.dtype == torch.float32 for m in peers for p in m.parameters())
    evals = res.history[res.history["kind"] == "eval"]
    assert res.summary["final_dev_ensemble"] < evals["dev_ensemble"].iloc[0]
    assert res.weights != [0.5, 0.5]  # the outer steps ran


@pytest.mark.parametrize("method", ["mlm", "sd", "kd", "dml", "kd_dwml"])
def test_every_method_runs_through_the_one_loop(method, corpus, tmp_path):
    """The baselines share the loop: metrics per peer, fixed weights stay fixed, dev CE falls, the
    teacher (kd, kd_dwml) is read from teacher_dir and left unchanged, SD's exit heads are checkpointed."""
    vocab = len(corpus.tokenizer)
    teacher_dir = tmp_path / "teacher"
    tiny_peers(vocab, n=1, seed=5)[0].save_pretrained(teacher_dir)
    corpus.tokenizer.save_pretrained(teacher_dir)  # a teacher folder holds the tokenizer it shares with the peers
    cfg = tiny_config(method=method, num_epochs=4, eval_interval=4, teacher_dir=str(teacher_dir), learning_rate=1e-2)
    res = train.train(cfg, corpus, tiny_peers(vocab), tmp_path / "run", progress=False)
    rows = res.history[res.history["kind"] == "train"]
    assert all(len(ce) == 2 for ce in rows["ce"])
    assert ("kl" in rows) == (method != "mlm")
    if method in ("dml", "mlm", "sd", "kd"):
        assert all(w in (None, [0.5, 0.5]) for w in rows["w"])
    if method == "kd_dwml":
        assert all(len(k) == 2 for k in rows["kl_teacher"])
    ev = res.history[res.history["kind"] == "eval"]
    assert all(b < a for a, b in zip(ev["dev_ce"].iloc[0], ev["dev_ce"].iloc[-1]))
    ck = torch.load(tmp_path / "run" / train.CHECKPOINT, weights_only=True)
    if method == "sd":
        assert len(ck["method"]["heads"]) == 2 and len(ck["method"]["heads"][0]) > 0
    if method == "kd_dwml":  # a teacher given as a module (kd above read it from teacher_dir)
        teacher = tiny_peers(vocab, n=1, seed=6)[0]
        before = [p.detach().clone() for p in teacher.parameters()]
        train.train(cfg, corpus, tiny_peers(vocab), tmp_path / "run2", teacher=teacher, progress=False)
        assert all(torch.equal(a, p) for a, p in zip(before, teacher.parameters()))


def test_mixed_precision_auto_is_recorded_as_what_it_resolved_to(corpus, tmp_path, monkeypatch):
    """'auto' trains as True or False would on this device, and the run's config.json says which (precision.json
    says why): a run made with bf16 elsewhere is then not reused as if it were this machine's float32 run. On a
    CPU with bf16 instructions the timed probe decides (injected here), once per shape: the cache answers after."""
    from dwml import precision

    cache = tmp_path / "cache"
    monkeypatch.setenv("DWML_CACHE_DIR", str(cache))
    probed = []

    for native, faster in ((False, None), (True, True), (True, False)):
        def fake_passes(cfg, corpus_, models, teacher, bf16, faster=faster):
            probed.append(bf16)
            return [0.1] * 3 if bf16 == faster else [0.2] * 3

        monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo=None, native=native: native)
        monkeypatch.setattr(train, "time_method_passes", fake_passes)
        if cache.is_dir():
            for f in cache.iterdir():
                f.unlink()
        probed.clear()
        expect = bool(native and faster)
        name = f"auto{native}{faster}"
        cfg = tiny_config(num_epochs=2, mixed_precision="auto")
        auto_models = tiny_peers(len(corpus.tokenizer))
        train.train(cfg, corpus, auto_models, tmp_path / name, progress=False)
        saved = json.loads((tmp_path / name / train.CONFIG).read_text())
        why = json.loads((tmp_path / name / "precision.json").read_text())
        assert saved["train"]["mixed_precision"] is expect and why["bf16"] is expect
        assert probed == ([False, True] if native else []) and why["reason"].startswith("measured" if native else "rule")
        fixed_models = tiny_peers(len(corpus.tokenizer))
        train.train(tiny_config(num_epochs=2, mixed_precision=expect), corpus, fixed_models, tmp_path / f"fixed{name}",
                    progress=False)
        for a, b in zip(params(auto_models), params(fixed_models)):
            assert torch.equal(a, b)
        if native:  # the same shape again: the cached decision, no probe
            probed.clear()
            train.train(cfg, corpus, tiny_peers(len(corpus.tokenizer)), tmp_path / f"again{name}", progress=False)
            again = json.loads((tmp_path / f"again{name}" / "precision.json").read_text())
            assert probed == [] and again["bf16"] is expect and again["reason"].startswith("cached")


def test_a_run_that_goes_on_keeps_the_precision_it_recorded(corpus, tmp_path, monkeypatch):
    """'auto' is decided once per run: a finished run is reused, an interrupted or extended one goes on, with
    the choice in its precision.json, although the probe would now decide the other way (another thread count,
    another machine's cache, a noisy probe). The mismatch error that deciding again caused on a real study
    (a run trained in bf16, looked up where the probe now chose float32) is the failure this guards against."""
    from dwml import precision

    monkeypatch.setenv("DWML_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda cpuinfo=None: True)
    faster = {"bf16": True}
    probed = []

    def fake_passes(cfg, corpus_, models, teacher, bf16):
        probed.append(bf16)
        return [0.1] * 3 if bf16 == faster["bf16"] else [0.2] * 3

    monkeypatch.setattr(train, "time_method_passes", fake_passes)
    run = tmp_path / "run"
    vocab = len(corpus.tokenizer)
    first = train.train(tiny_config(num_epochs=2, mixed_precision="auto"), corpus, tiny_peers(vocab), run,
                        progress=False)
    assert json.loads((run / "precision.json").read_text())["bf16"] is True and probed == [False, True]

    faster["bf16"] = False  # the probe now prefers float32, and the cache is gone
    for f in (tmp_path / "cache").iterdir():
        f.unlink()
    probed.clear()
    again = train.train(tiny_config(num_epochs=2, mixed_precision="auto"), corpus, tiny_peers(vocab), run,
                        progress=False)
    assert probed == [] and again.summary == first.summary  # reused, not refused or retrained
    longer = train.train(tiny_config(num_epochs=4, mixed_precision="auto"), corpus,
                         tiny_peers(vocab), run, progress=False)
    assert probed == [] and longer.summary["steps"] == 4
    assert json.loads((run / train.CONFIG).read_text())["train"]["mixed_precision"] is True
    # a fresh folder decides again, and now chooses float32
    fresh = tmp_path / "fresh"
    train.train(tiny_config(num_epochs=2, mixed_precision="auto"), corpus, tiny_peers(vocab), fresh, progress=False)
    assert probed == [False, True] and json.loads((fresh / "precision.json").read_text())["bf16"] is False


def test_the_precision_probe_times_the_method_and_leaves_peers_and_rng_as_they_were(corpus):
    cfg = tiny_config(num_epochs=2, method="dwml")
    models = tiny_peers(len(corpus.tokenizer))
    before = [p.detach().clone() for p in params(models)]
    attn = [m.config._attn_implementation for m in models]
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    times = train.time_method_passes(cfg, corpus, models, None, bf16=True, n=2, warmup=1)
    assert len(times) == 2 and all(t > 0 for t in times)
    assert torch.equal(torch.rand(3), expected)  # the RNG stream as if no probe had run
    assert all(p.grad is None for m in models for p in m.parameters())
    assert all(torch.equal(a, b) for a, b in zip(before, params(models)))
    assert [m.config._attn_implementation for m in models] == attn
