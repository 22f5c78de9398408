"""The loop's parts in their own modules: the device setting (dwml.device), the optimiser choice (dwml.optim),
checkpoint writing, restoring and RNG state (dwml.checkpoint), and the run folder's final files
(dwml.runfolder). Each checked against a direct computation on tiny objects; the loop's own tests
(test_train, test_resume_kill) check them together, bit for bit."""
from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from conftest import tiny_roberta
from dwml import checkpoint, runfolder
from dwml.config import ConfigError
from dwml.device import resolve_device
from dwml.optim import make_optimizer, use_fused


def test_resolve_device_names_the_setting_when_cuda_is_absent():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda:0") == torch.device("cuda:0")
    else:
        with pytest.raises(ConfigError, match=r"--device='cuda': no CUDA device"):
            resolve_device("cuda", "--device")


def test_fused_adamw_only_on_cuda():
    assert use_fused(torch.device("cuda")) and use_fused("cuda:1")
    assert not use_fused(torch.device("cpu")) and not use_fused("cpu")


class _Counter:
    """A stand-in for a method's or batcher's state: an integer it saves and loads."""

    def __init__(self, n: int = 0):
        self.n = n

    def state_dict(self) -> dict:
        return {"n": self.n}

    def load_state_dict(self, sd: dict) -> None:
        self.n = sd["n"]


def _stepped(seed: int):
    """A linear model after one AdamW step (so the optimiser has moments to save)."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 3)
    opt = make_optimizer([model], lr=0.1, weight_decay=0.1, betas=(0.9, 0.95))
    model(torch.randn(5, 4)).square().sum().backward()
    opt.step()
    return model, opt


def test_a_written_checkpoint_restores_models_optimisers_states_and_the_rng(tmp_path):
    model, opt = _stepped(0)
    method, batcher = _Counter(7), _Counter(11)
    path = tmp_path / "checkpoint.pt"
    path.write_bytes(b"an older checkpoint")  # replaced whole (temporary file, then rename)
    rng = checkpoint.rng_state()
    expected_draw = torch.rand(3)  # what the generator gives next after the saved state
    checkpoint.write_checkpoint(path, config={"train": {"seed": 0}}, architecture=[[["w", [3, 4]]]], models=[model],
                                optimizers=[opt], method=method, batchers={"train": batcher.state_dict()}, rng=rng,
                                state={"step": 5, "tokens": 640}, metrics_bytes=123)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary file left
    ck = checkpoint.read_checkpoint(path)  # has every key the reader requires
    assert set(checkpoint.REQUIRED_KEYS) <= set(ck) and "rng_ranks" not in ck and ck["metrics_bytes"] == 123

    other, other_opt = _stepped(1)
    other_method, other_batcher = _Counter(), _Counter()
    torch.rand(17)  # move the generator on
    state = checkpoint.restore_checkpoint(ck, models=[other], optimizers=[other_opt], method=other_method,
                                          batchers={"train": other_batcher})
    assert state == {"step": 5, "tokens": 640}
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    saved, loaded = opt.state_dict()["state"], other_opt.state_dict()["state"]
    assert saved.keys() == loaded.keys()
    for k in saved:
        for name in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(saved[k][name], loaded[k][name])
    assert (other_method.n, other_batcher.n) == (7, 11)
    assert torch.equal(torch.rand(3), expected_draw)


def test_each_rank_restores_its_own_rng_state(tmp_path):
    model, opt = _stepped(0)
    states, draws = [], []
    for seed in (1, 2):  # two ranks' generators
        torch.manual_seed(seed)
        states.append(checkpoint.rng_state())
        draws.append(torch.rand(2))
    path = tmp_path / "checkpoint.pt"
    checkpoint.write_checkpoint(path, config={}, architecture=[], models=[model], optimizers=[opt], method=_Counter(),
                                batchers={}, rng=states[0], state={}, metrics_bytes=0, rng_ranks=states)
    ck = checkpoint.read_checkpoint(path)
    for rank in (1, 0):
        checkpoint.restore_checkpoint(ck, models=[model], optimizers=[opt], method=_Counter(), batchers={}, rank=rank)
        assert torch.equal(torch.rand(2), draws[rank])


def test_a_resume_under_another_thread_count_warns_on_the_cpu_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with pytest.warns(UserWarning, match=r"ck\.pt: the run was written with 1 torch thread\(s\) and resumes with 2"):
        checkpoint.warn_threads({"threads": 1}, {"threads": 2}, "ck.pt", cpu)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        checkpoint.warn_threads({"threads": 2}, {"threads": 2}, "ck.pt", cpu)
        checkpoint.warn_threads({"threads": 1}, {"threads": 2}, "ck.pt", cuda)
        checkpoint.warn_threads({}, {"threads": 2}, "ck.pt", cpu)  # written before threads were recorded


def test_the_metrics_log_appends_lines_and_counts_bytes(tmp_path):
    path = tmp_path / runfolder.METRICS
    log = runfolder.MetricsLog(path)
    log.write({"kind": "eval", "step": 0, "dev_ensemble": 6.5})
    size = log.size()
    log.write({"kind": "train", "step": 1, "loss": 6.25})
    log.close()
    text = path.read_bytes()
    assert size == len(text.split(b"\n")[0]) + 1  # the first line and its newline
    assert list(runfolder.read_metrics(tmp_path)["step"]) == [0, 1]
    with open(path, "r+b") as fh:  # what a resume does with the recorded size
        fh.truncate(size)
    log = runfolder.MetricsLog(path)
    log.write({"kind": "train", "step": 1, "loss": 6.0})
    assert log.size() == len(text) - len(b"6.25") + len(b"6.0")
    log.close()
    assert list(runfolder.read_metrics(tmp_path)["loss"].iloc[1:]) == [6.0]
    other_rank = runfolder.MetricsLog(tmp_path / "unwritten.jsonl", write=False)
    other_rank.write({"step": 2})
    assert other_rank.size() == 0 and not (tmp_path / "unwritten.jsonl").exists()
    other_rank.close()


def test_weights_list():
    assert runfolder.weights_list(None) is None
    w = torch.tensor([0.25, 0.75], requires_grad=True) * 1.0
    assert runfolder.weights_list(w) == [0.25, 0.75]


def test_a_finished_run_is_written_and_read_back(tmp_path, small_tokenizer):
    from dwml.data import load_tokenizer

    tok = load_tokenizer(small_tokenizer)
    torch.manual_seed(0)
    models = [tiny_roberta(len(tok)), tiny_roberta(len(tok), hidden=8)]
    rows = [{"kind": "eval", "step": 0, "dev_ce": [6.5, 6.6], "dev_ensemble": 6.4},
            {"kind": "train", "step": 1, "loss": 6.0},
            {"kind": "eval", "step": 2, "dev_ce": [5.5, 5.9], "dev_ensemble": 5.2}]
    (tmp_path / runfolder.METRICS).write_text("".join(json.dumps(r) + "\n" for r in rows))
    state = {"step": 2, "tokens": 256, "stopped_early": False, "elapsed": 1.5, "best": 5.2}
    res = runfolder.write_finished_run(tmp_path, models, tok, "dwml", [0.4, 0.6], state)
    summary = json.loads((tmp_path / runfolder.SUMMARY).read_text())
    assert (tmp_path / runfolder.DONE).is_file() and res.done and res.summary == summary
    assert summary["final_dev_ce"] == [5.5, 5.9] and summary["initial_dev_ce"] == [6.5, 6.6]
    assert summary["final_dev_ensemble"] == 5.2 and summary["best_dev_ensemble"] == 5.2
    assert (summary["method"], summary["steps"], summary["tokens"], summary["weights"]) == ("dwml", 2, 256, [0.4, 0.6])
    assert summary["threads"] == torch.get_num_threads() and not summary["stopped_early"]
    assert res.peer_dirs == [tmp_path / "peer_0", tmp_path / "peer_1"]
    for d, m in zip(res.peer_dirs, models):
        assert json.loads((d / "config.json").read_text())["hidden_size"] == m.config.hidden_size
        assert (d / "tokenizer.json").is_file()

    back = runfolder.load_result(tmp_path)
    assert back.done and back.weights == [0.4, 0.6] and back.peer_dirs == res.peer_dirs
    assert back.summary == summary and len(back.history) == 3
    assert math.isclose(back.history[back.history["kind"] == "train"]["loss"].iloc[0], 6.0)
