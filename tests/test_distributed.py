"""Issue 21: one run on 2 processes (gloo, CPU) computes what one process computes on the union of their
micro-batches, writes only from rank 0, resumes exactly after a kill, and stops both ranks on a NaN.

The test starts the two ranks itself (this file run as a script, with the environment torchrun would set)
twice: once for three jobs in a row (an uninterrupted run, a run with a NaN on rank 1, a run killed after
its step-2 checkpoint) and once to resume the killed run. Peers are float64 with dropout off, so the
comparison with one process is to rounding (< 1e-8), and the resumed run is compared bit for bit.
"""
from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
BLOCK = 32
B = 2  # each rank's micro-batch; the one-process reference takes 2 * B


def tiny_peers(vocab: int, seed: int = 0):
    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM

    torch.manual_seed(seed)
    return [RobertaForMaskedLM(RobertaConfig(
        vocab_size=vocab, hidden_size=h, num_hidden_layers=1, num_attention_heads=2, intermediate_size=2 * h,
        max_position_embeddings=BLOCK + 4, pad_token_id=1, bos_token_id=0, eos_token_id=2,
        attn_implementation="eager")).double() for h in (32, 16)]


def tiny_config(cache_dir: str, nproc: int, batch_size: int):
    from dwml.config import Config

    return Config.from_dict(
        data={"corpus": "unused", "vocab_size": 600, "block_size": BLOCK, "cache_dir": cache_dir, "packing": "packed"},
        train=dict(method="dwml", learning_rate=3e-3, min_lr=3e-4, warmup_iters=1, lr_decay_iters=10,
                   batch_size=batch_size, num_batches=2, num_epochs=3, weight_update_frequency=2, eval_interval=3,
                   eval_batches=1, checkpoint_interval=1, step_size=0.5, min_step_size=0.05, dropout=0.0,
                   enable_early_stopping=False, device="cpu", nproc=nproc))


def prepared(corpus_dir: str, cache_dir: str):
    from dwml.config import DataConfig
    from dwml.data import prepare_corpus

    return prepare_corpus(DataConfig(corpus=corpus_dir, vocab_size=600, block_size=BLOCK, cache_dir=cache_dir),
                          progress=False)


# --------------------------------------------------------------------------------------------------
# The worker: RANK=r WORLD_SIZE=2 ... python tests/test_distributed.py '<json args>'
# --------------------------------------------------------------------------------------------------

def _audit_writes(root: Path, seen: list) -> None:
    """Record every file this process opens for writing, creates, renames or removes under ``root``."""
    def hook(event, args):
        path = None
        if event == "open" and args and isinstance(args[0], (str, os.PathLike)):
            mode, flags = args[1], args[2]
            if (isinstance(mode, str) and any(c in mode for c in "wax+")) or (isinstance(flags, int) and flags & (
                    os.O_WRONLY | os.O_RDWR | os.O_CREAT)):
                path = args[0]
        elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "os.truncate", "os.rmdir"):
            path = args[0]
        if path is not None and os.path.abspath(os.fsdecode(path)).startswith(str(root)):
            seen.append(f"{event} {path}")
    sys.addaudithook(hook)


def _dump(trainer_models, weights, out: Path) -> None:
    import torch

    torch.save({"models": [m.state_dict() for m in trainer_models], "w": weights}, out)


def worker(args: dict) -> None:
    import torch
    import transformers

    from dwml import methods
    import dwml.train as T

    torch.set_num_threads(1)
    rank = int(os.environ["RANK"])
    out = Path(args["out"])
    corpus = prepared(args["corpus"], args["cache"])
    vocab = len(corpus.tokenizer)
    runs = Path(os.path.abspath(args["runs"]))
    writes: list[str] = []
    if rank > 0:
        _audit_writes(runs, writes)
        saved = transformers.PreTrainedModel.save_pretrained

        def recording_save(self, path, *a, **k):  # safetensors writes outside Python's audit hooks
            writes.append(f"save_pretrained {path}")
            return saved(self, path, *a, **k)
        transformers.PreTrainedModel.save_pretrained = recording_save

    def report_writes():
        (out / f"writes_{args['launch']}_rank{rank}.json").write_text(json.dumps(writes))

    cfg = tiny_config(args["cache"], 2, B)
    if args["launch"] == "resume":
        models = tiny_peers(vocab, seed=123)  # another init: everything must come from the checkpoint
        res = T.train(cfg, corpus, models, runs / "killed", progress=False)
        _dump(models, res.weights, out / f"resumed_rank{rank}.pt")
        report_writes()
        return

    # 1. uninterrupted
    models = tiny_peers(vocab)
    res = T.train(cfg, corpus, models, runs / "full", progress=False)
    _dump(models, res.weights, out / f"full_rank{rank}.pt")

    # 2. a NaN in rank 1's loss at step 2
    loss = methods.DWML.loss
    calls = {"n": 0}

    def nan_loss(self, batch):
        total, parts = loss(self, batch)
        calls["n"] += 1
        if rank == 1 and calls["n"] == 3:  # step 2's first micro-batch (2 a step)
            return total * float("nan"), {k: v * float("nan") for k, v in parts.items()}
        return total, parts
    methods.DWML.loss = nan_loss
    try:
        T.train(cfg, corpus, tiny_peers(vocab), runs / "nan", progress=False)
        message = "no error"
    except FloatingPointError as err:
        message = str(err)
    methods.DWML.loss = loss
    (out / f"nan_rank{rank}.txt").write_text(message)

    # 3. killed right after the step-2 checkpoint (every rank past it, rank 0's file written)
    save = T.Trainer.save_checkpoint

    def killing_save(self):
        save(self)
        if self.state["step"] == 2:
            torch.distributed.barrier()
            report_writes()
            os.kill(os.getpid(), signal.SIGKILL)
    T.Trainer.save_checkpoint = killing_save
    T.train(cfg, corpus, tiny_peers(vocab), runs / "killed", progress=False)
    print("KILL POINT NOT REACHED", flush=True)


# --------------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(args: dict, timeout: float = 120) -> list[subprocess.CompletedProcess]:
    """Both ranks of one launch, as torchrun would start them; both are killed if either outlives ``timeout``."""
    port = _free_port()
    procs = []
    for r in range(2):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT)] + sys.path), "RANK": str(r), "WORLD_SIZE": "2",
               "LOCAL_RANK": str(r), "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
               "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, str(HERE), json.dumps(args)], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    done = []
    try:
        for p in procs:
            so, se = p.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(p.args, p.returncode, so, se))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return done


@pytest.fixture(scope="module")
def runs(small_corpus, tmp_path_factory):
    """The 2-rank launches and the one-process reference on the union of the ranks' micro-batches."""
    import torch

    from dwml.train import train

    tmp = tmp_path_factory.mktemp("ddp")
    cache, out, root = str(tmp / "cache"), tmp / "out", tmp / "runs"
    out.mkdir()
    corpus = prepared(str(small_corpus), cache)  # tokenizer and caches built here, read by the ranks
    args = {"corpus": str(small_corpus), "cache": cache, "out": str(out), "runs": str(root)}
    first = _launch({**args, "launch": "first"})
    for p in first:  # both ranks die by SIGKILL at the end of the third job
        assert p.returncode == -signal.SIGKILL, (p.returncode, p.stdout[-2000:], p.stderr[-4000:])
    ck = torch.load(root / "killed" / "checkpoint.pt", map_location="cpu", weights_only=True)
    killed_step = ck["state"]["step"]
    second = _launch({**args, "launch": "resume"})
    for p in second:
        assert p.returncode == 0, (p.returncode, p.stdout[-2000:], p.stderr[-4000:])
    ref_models = tiny_peers(len(corpus.tokenizer))
    ref = train(tiny_config(cache, 1, 2 * B), corpus, ref_models, tmp / "one_process", progress=False)
    return {"out": out, "root": root, "ref_models": ref_models, "ref": ref, "killed_step": killed_step}


def _load(path: Path):
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def test_two_ranks_equal_one_process_on_the_union(runs):
    """Parameters and w after 3 steps (outer step at step 2) as one process with micro-batch 2B computes."""
    full = _load(runs["out"] / "full_rank0.pt")
    worst = 0.0
    for m, sd in zip(runs["ref_models"], full["models"]):
        for k, v in m.state_dict().items():
            worst = max(worst, float((v - sd[k]).abs().max()))
    assert worst < 1e-8, worst
    assert max(abs(a - b) for a, b in zip(runs["ref"].weights, full["w"])) < 1e-8
    assert full["w"] != [0.5, 0.5]  # the outer step moved w
    # the logged losses, gradient norms (after DDP's all-reduce) and hypergradient are the union's too
    from dwml.runfolder import read_metrics

    ours, ref = read_metrics(runs["root"] / "full"), runs["ref"].history
    ours, ref = ours[ours["kind"] == "train"], ref[ref["kind"] == "train"]
    assert ours["hypergrad"].notna().sum() == 1
    for col in ("loss", "ce", "kl", "grad_norm", "hypergrad"):
        for a, b in zip(ours[col], ref[col]):
            a, b = (a, b) if isinstance(a, list) else ([a], [b])
            if isinstance(a[0], float) and math.isnan(a[0]):
                continue
            tol = 1e-10 if col == "hypergrad" else 1e-6  # the step's read-back is float32 (Trainer.check)
            assert max(abs(x - y) / max(1.0, abs(y)) for x, y in zip(a, b)) < tol, (col, a, b)
    init = tiny_peers(runs["ref_models"][0].config.vocab_size)
    assert float((init[0].roberta.embeddings.word_embeddings.weight.detach()
                  - full["models"][0]["roberta.embeddings.word_embeddings.weight"]).abs().max()) > 1e-4  # it trained


def test_weights_and_parameters_identical_on_both_ranks(runs):
    import torch

    a, b = _load(runs["out"] / "full_rank0.pt"), _load(runs["out"] / "full_rank1.pt")
    assert a["w"] == b["w"]
    for sa, sb in zip(a["models"], b["models"]):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_only_rank_0_writes(runs):
    for launch in ("first", "resume"):
        assert json.loads((runs["out"] / f"writes_{launch}_rank1.json").read_text()) == []
    full = runs["root"] / "full"
    assert {p.name for p in full.iterdir()} == {p.name for p in Path(runs["ref"].run_dir).iterdir()}
    rows = [json.loads(line) for line in (full / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train_rows] == [1, 2, 3]  # one line a step, not one per rank
    ref = runs["ref"].history
    ref_tokens = ref[ref["kind"] == "train"]["tokens_per_step"].tolist()
    assert [r["tokens_per_step"] for r in train_rows] == ref_tokens  # the tokens of both ranks


def test_kill_and_resume_on_two_ranks_ends_as_the_uninterrupted_run(runs):
    import torch

    assert runs["killed_step"] == 2
    full, resumed = _load(runs["out"] / "full_rank0.pt"), _load(runs["out"] / "resumed_rank0.pt")
    assert full["w"] == resumed["w"]
    for sa, sb in zip(full["models"], resumed["models"]):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    drop = ["tokens_per_s", "elapsed_s"]
    from dwml.runfolder import read_metrics

    a, b = read_metrics(runs["root"] / "full"), read_metrics(runs["root"] / "killed")
    assert a.drop(columns=drop).to_json() == b.drop(columns=drop).to_json()


def test_nan_on_rank_1_stops_both_ranks_naming_step_peer_and_rank(runs):
    import torch

    msgs = [(runs["out"] / f"nan_rank{r}.txt").read_text() for r in range(2)]
    assert msgs[0] == msgs[1], msgs
    assert msgs[0].startswith("step 2, peer 0, rank 1: non-finite training loss"), msgs[0]
    assert "last good checkpoint" in msgs[0]
    ck = torch.load(runs["root"] / "nan" / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ck["state"]["step"] == 1  # the last good one, kept


def test_nproc_without_torchrun_is_refused_naming_the_setting(small_corpus, tmp_path):
    from dwml.config import ConfigError
    from dwml.train import train

    cache = str(tmp_path / "cache")
    corpus = prepared(str(small_corpus), cache)
    with pytest.raises(ConfigError, match=r"train.nproc=2 but 1 process\(es\) run: launch it with torchrun"):
        train(tiny_config(cache, 2, B), corpus, tiny_peers(len(corpus.tokenizer)), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ConfigError, match="train.nproc"):
        tiny_config(cache, 0, B)


def test_command_line_overrides():
    from dwml.config import ConfigError
    from dwml.train.__main__ import apply_overrides

    out = apply_overrides({"train": {"num_epochs": 3}, "data": {"packing": "lines"}},
                          ["train.num_epochs=50", "train.dropout=null", "data.packing=packed"])
    assert out["train"] == {"num_epochs": 50, "dropout": None} and out["data"] == {"packing": "packed"}
    for bad in ["train.num_epochs", "model.x=1", "epochs=3"]:
        with pytest.raises(ConfigError, match="SECTION.KEY=VALUE"):
            apply_overrides({}, [bad])


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))
