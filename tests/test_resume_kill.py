"""Issue 20: a run killed with SIGKILL at several points resumes and ends bit-identical to an uninterrupted
run on the CPU, not at one lucky point.

One run folder is killed five times in a row, each time at another kind of point, by a worker process
(this file run as a script) that patches one call to send itself SIGKILL:

1. in the middle of an optimizer step: after the first peer's AdamW step, before the second's;
2. in the middle of a checkpoint write: half of the new checkpoint's bytes written to its temporary file;
3. after a checkpoint was written to its temporary file, before the rename over the old one;
4. right after a checkpoint's rename, before anything else was written;
5. while the finished run saves its peers (no DONE yet).

Then the run is resumed here with freshly initialised peers of another seed (everything must come from
the checkpoint), and its peers, weights, metrics and summary must equal the uninterrupted run's.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_roberta

HERE = Path(__file__).resolve()
BLOCK = 32


def tiny_peers(vocab: int, seed: int = 0):
    import torch

    torch.manual_seed(seed)
    return [tiny_roberta(vocab, hidden=h, positions=BLOCK + 4, attn_implementation="eager") for h in (32, 16)]


def tiny_config(cache_dir: str):
    from dwml.config import Config

    return Config.from_dict(
        data={"corpus": "unused", "vocab_size": 600, "block_size": BLOCK, "cache_dir": cache_dir},
        train=dict(method="dwml", learning_rate=3e-3, min_lr=3e-4, warmup_iters=2, lr_decay_iters=20, batch_size=4,
                   num_batches=2, num_epochs=10, weight_update_frequency=2, eval_interval=3, eval_batches=2,
                   checkpoint_interval=2, step_size=0.5, min_step_size=0.05, device="cpu"))


def prepared(corpus_dir: str, cache_dir: str):
    from dwml.config import DataConfig
    from dwml.data import prepare_corpus

    return prepare_corpus(DataConfig(corpus=corpus_dir, vocab_size=600, block_size=BLOCK, cache_dir=cache_dir),
                          progress=False)


# --------------------------------------------------------------------------------------------------
# The worker: python tests/test_resume_kill.py '<json args>'
# --------------------------------------------------------------------------------------------------

def _die():
    os.kill(os.getpid(), signal.SIGKILL)


def _arm(kind: str, n: int) -> None:
    """Patch the n-th call of one operation to SIGKILL this process at the point ``kind`` names."""
    import io

    import torch
    import transformers

    count = {"n": 0}

    def hit() -> bool:
        count["n"] += 1
        return count["n"] == n

    if kind == "mid_optimizer_step":
        step = torch.optim.AdamW.step

        def killing_step(self, *a, **k):
            if hit():
                _die()
            return step(self, *a, **k)
        torch.optim.AdamW.step = killing_step
    elif kind == "mid_checkpoint_write":
        save = torch.save

        def killing_save(obj, f, *a, **k):
            if not (isinstance(f, (str, os.PathLike)) and "checkpoint.pt" in str(f)) or not hit():
                return save(obj, f, *a, **k)
            buf = io.BytesIO()
            save(obj, buf, *a, **k)
            with open(f, "wb") as fh:  # half the checkpoint reaches the disk, then the process dies
                fh.write(buf.getvalue()[: len(buf.getvalue()) // 2])
                fh.flush()
                os.fsync(fh.fileno())
            _die()
        torch.save = killing_save
    elif kind in ("before_checkpoint_rename", "after_checkpoint_rename"):
        replace = os.replace

        def killing_replace(src, dst, *a, **k):
            if Path(dst).name != "checkpoint.pt" or not hit():
                return replace(src, dst, *a, **k)
            if kind == "after_checkpoint_rename":
                replace(src, dst, *a, **k)
            _die()
        os.replace = killing_replace
    elif kind == "while_saving_peers":
        save_pretrained = transformers.PreTrainedModel.save_pretrained

        def killing_save_pretrained(self, *a, **k):
            out = save_pretrained(self, *a, **k)
            if hit():  # the first peer saved, the second not, no summary, no DONE
                _die()
            return out
        transformers.PreTrainedModel.save_pretrained = killing_save_pretrained
    else:
        raise ValueError(kind)


def worker(args: dict) -> None:
    from dwml.train import train

    corpus = prepared(args["corpus"], args["cache"])
    _arm(args["kind"], args["n"])
    train(tiny_config(args["cache"]), corpus, tiny_peers(len(corpus.tokenizer), seed=args["seed"]), args["run"],
          progress=False)
    print("KILL POINT NOT REACHED", flush=True)


# --------------------------------------------------------------------------------------------------
# The test
# --------------------------------------------------------------------------------------------------

KILLS = [  # (kind, which call), one after another on the same folder; 10 steps, a checkpoint every 2
    ("mid_optimizer_step", 8),        # step 4, between peer 0's update and peer 1's (checkpoint at step 2)
    ("mid_checkpoint_write", 2),      # resumed at 2: the step-4 checkpoint is written, the step-6 one half
    ("before_checkpoint_rename", 1),  # resumed at 4: the step-6 checkpoint complete in its temporary file
    ("after_checkpoint_rename", 2),   # resumed at 4: killed just after the step-8 checkpoint's rename
    ("while_saving_peers", 1),        # resumed at 8: steps 9, 10, the last checkpoint, then peer 0 saved
]


def _state(models):
    return [t.detach().clone() for m in models for t in m.state_dict().values()]


@pytest.mark.slow
def test_sigkill_at_several_points_resumes_bit_identical(small_corpus, tmp_path):
    import torch

    from dwml.runfolder import CHECKPOINT, DONE
    from dwml.train import train

    cache = str(tmp_path / "cache")
    corpus = prepared(str(small_corpus), cache)
    vocab = len(corpus.tokenizer)
    ref_models = tiny_peers(vocab)
    ref = train(tiny_config(cache), corpus, ref_models, tmp_path / "ref", progress=False)
    assert ref.summary["steps"] == 10

    run = tmp_path / "run"
    steps_seen = []
    for i, (kind, n) in enumerate(KILLS):
        # the first process starts the run from the reference's initialisation; the others resume it from
        # peers of another seed, so that everything they continue with comes from the checkpoint
        args = {"corpus": str(small_corpus), "cache": cache, "run": str(run), "kind": kind, "n": n,
                "seed": 0 if i == 0 else 100 + i}
        proc = subprocess.run([sys.executable, str(HERE), json.dumps(args)], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        assert proc.returncode == -signal.SIGKILL, (kind, proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
        assert not (run / DONE).exists(), kind
        ck = torch.load(run / CHECKPOINT, map_location="cpu", weights_only=True)  # the last good one, intact
        steps_seen.append(ck["state"]["step"])
    assert steps_seen == [2, 4, 4, 8, 10]

    models = tiny_peers(vocab, seed=123)  # another init: everything must come from the checkpoint
    res = train(tiny_config(cache), corpus, models, run, progress=False)
    assert res.done and res.summary["steps"] == 10
    for a, b in zip(_state(ref_models), _state(models)):
        assert torch.equal(a, b)
    assert res.weights == ref.weights and res.weights != [0.5, 0.5]
    drop = ["tokens_per_s", "elapsed_s"]
    assert ref.history.drop(columns=drop).to_json() == res.history.drop(columns=drop).to_json()
    same = {k: v for k, v in ref.summary.items() if k not in ("elapsed_s", "peer_dirs")}
    assert same == {k: v for k, v in res.summary.items() if k not in ("elapsed_s", "peer_dirs")}
    for d_ref, d_run in zip(ref.peer_dirs, res.peer_dirs):  # the saved peers, byte for byte
        assert (d_ref / "model.safetensors").read_bytes() == (d_run / "model.safetensors").read_bytes()


if __name__ == "__main__":
    worker(json.loads(sys.argv[1]))
