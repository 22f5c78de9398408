"""dwml.profiling: counted FLOPs agree with the closed form, the sampler samples and stops, MFU arithmetic.

Models are tiny RobertaForMaskedLM built here (hidden 32 to 64, 1 to 3 layers): each test takes well under
a few seconds on a CPU; the sampler's timing is driven by a fake clock, the busy-process test takes 2 s.
"""
from __future__ import annotations

import math
import threading
import time

import pandas as pd
import pytest
import torch

from dwml import profiling, utilization
from conftest import tiny_roberta


def tiny(layers=2, hidden=64, heads=4, ffn=128, vocab=300, attn="eager", dropout=0.1, seed=0):
    torch.manual_seed(seed)
    return tiny_roberta(vocab, layers, hidden, heads, ffn, positions=70, attention_probs_dropout_prob=dropout,
                        attn_implementation=attn)


def masked_head_loss(model, batch):
    """Encoder on the whole block, LM head on the labelled positions only (as dwml.methods does)."""
    keep = batch["labels"] != profiling.IGNORE_INDEX
    h = model.roberta(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    return torch.nn.functional.cross_entropy(model.lm_head(h[keep]), batch["labels"][keep])


def by_hand(L, d, f, V, b, s, head_tokens=None, backward=True):
    """The step's matmuls written out one by one, as (m, k, n) triples, independently of the module."""
    T = b * s
    ht = T if head_tokens is None else head_tokens
    fwd = []
    for _ in range(L):
        fwd += [(T, d, d)] * 4 + [(T, d, f), (T, f, d)]       # Q, K, V, output; FFN up and down
        fwd += [(s, d, s)] * b + [(s, s, d)] * b               # Q K^T and P V, heads stacked (sum d)
    fwd += [(ht, d, d), (ht, d, V)]                            # LM head dense, decoder
    flops = sum(2 * m * k * n for m, k, n in fwd)
    return 3 * flops if backward else flops


# -- FLOPs --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("L,d,heads,f,V,b,s", [(2, 64, 4, 128, 300, 3, 32), (1, 32, 2, 64, 500, 2, 64),
                                               (3, 48, 3, 192, 257, 1, 16)])
def test_counted_step_flops_match_the_analytic_estimate(L, d, heads, f, V, b, s):
    model = tiny(L, d, heads, f, V)
    batch = profiling.random_mlm_batch(V, b, s)
    counted = profiling.count_step_flops(model, batch)
    analytic = profiling.analytic_step_flops(model, tokens=b * s, seq_len=s)
    assert abs(counted - analytic) / analytic < 0.10  # the bound ...
    assert counted == analytic == by_hand(L, d, f, V, b, s)  # ... and in fact every matmul is accounted for


def test_analytic_is_kaplans_6NT_plus_attention_when_ffn_is_4d():
    L, d, V, s, T = 4, 96, 1000, 128, 512
    cfg = tiny(L, d, 4, 4 * d, V).config
    n_nonembedding = 12 * L * d * d
    head = 6 * T * (d * d + d * V)
    assert profiling.analytic_step_flops(cfg, T, s) == 6 * n_nonembedding * T + 12 * L * s * d * T + head
    assert profiling.analytic_step_flops(cfg, T, s, backward=False) * 3 == profiling.analytic_step_flops(cfg, T, s)


def test_sdpa_fused_cpu_kernel_is_counted_with_its_recompute():
    # Without attention dropout, sdpa runs PyTorch's CPU flash kernel, which torch's counter misses.
    model = tiny(attn="sdpa", dropout=0.0)
    b, s = 3, 32
    batch = profiling.random_mlm_batch(300, b, s)

    def step():
        model(**batch).loss.backward()

    total, by_op = profiling.count_flops(step)
    model.zero_grad(set_to_none=True)
    assert any("flash_attention_for_cpu" in op for op in by_op), by_op
    L, d = 2, 64
    fused = sum(v for k, v in by_op.items() if "attention" in k)
    assert fused == 2 * b * s * s * d * L * (1 + 1) + 2 * b * s * s * d * L * (3 + 2)  # fwd 2 + bwd 5 matmuls
    analytic = profiling.analytic_step_flops(model, b * s, s, attention_recompute=True)
    assert total == analytic
    assert abs(total - profiling.analytic_step_flops(model, b * s, s)) / analytic < 0.10
    assert profiling.count_step_flops(model, batch) == total


def test_sdpa_with_dropout_counts_like_eager():
    # With attention dropout the CPU runs sdpa's math path, plain batched matmuls: no recompute.
    eager, sdpa = tiny(attn="eager"), tiny(attn="sdpa")
    batch = profiling.random_mlm_batch(300, 2, 32)
    assert profiling.count_step_flops(sdpa, batch) == profiling.count_step_flops(eager, batch) == profiling.analytic_step_flops(eager, 64, 32)


def test_masked_head_and_forward_only_counts():
    model = tiny()
    batch = profiling.random_mlm_batch(300, 2, 32, mlm_probability=0.25)
    k = int((batch["labels"] != profiling.IGNORE_INDEX).sum())
    assert k == 16
    counted = profiling.count_step_flops(model, batch, loss_fn=masked_head_loss)
    assert counted == profiling.analytic_step_flops(model, 64, 32, head_tokens=k) == by_hand(2, 64, 128, 300, 2, 32, k)
    assert profiling.count_step_flops(model, batch, backward=False) == by_hand(2, 64, 128, 300, 2, 32, backward=False)


def test_counting_leaves_grads_and_random_streams_alone():
    model = tiny()
    batch = profiling.random_mlm_batch(300, 2, 16)
    model(**batch).loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    profiling.count_step_flops(model, batch)  # dropout draws inside
    assert torch.equal(torch.rand(3), expected)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))


def test_flops_per_peer_table():
    peers = [tiny(2, 64, 4, 128), tiny(1, 32, 2, 64)]
    df = profiling.flops_per_peer(peers, batch_size=2, block_size=32)
    assert list(df["ratio"]) == [1.0, 1.0]
    assert list(df["params"]) == [sum(p.numel() for p in m.parameters()) for m in peers]
    assert df["analytic_flops"].iloc[0] == by_hand(2, 64, 128, 300, 2, 32)
    masked = profiling.flops_per_peer(peers, 2, 32, loss_fn=masked_head_loss, head="labels", names=["a", "b"])
    assert list(masked["ratio"]) == [1.0, 1.0] and list(masked["peer"]) == ["a", "b"]
    assert (masked["analytic_flops"] < df["analytic_flops"]).all()
    # A fused attention kernel (sdpa without dropout on the CPU) recomputes Q K^T: counted above model FLOPs.
    fused = profiling.flops_per_peer([tiny(attn="sdpa", dropout=0.0)], 2, 32)
    recompute = profiling.analytic_step_flops(peers[0], 64, 32, attention_recompute=True)
    assert fused["ratio"].iloc[0] == pytest.approx(recompute / df["analytic_flops"].iloc[0])
    assert 1.0 < fused["ratio"].iloc[0] < 1.10


def test_bad_flop_inputs_name_the_parameter():
    cfg = tiny().config
    with pytest.raises(ValueError, match="seq_len"):
        profiling.analytic_step_flops(cfg, tokens=100, seq_len=32)
    with pytest.raises(ValueError, match="head_tokens"):
        profiling.analytic_step_flops(cfg, tokens=64, seq_len=32, head_tokens=65)
    with pytest.raises(ValueError, match="intermediate_size"):
        profiling.analytic_step_flops(type("C", (), {"num_hidden_layers": 2, "hidden_size": 8})(), 8, 8)
    with pytest.raises(KeyError, match="labels"):
        profiling.count_step_flops(tiny(), {"input_ids": torch.zeros(1, 4, dtype=torch.long)})
    with pytest.raises(ValueError, match="head"):
        profiling.flops_per_peer([tiny()], 1, 8, head="some")


# -- peaks and MFU ----------------------------------------------------------------------------------

def test_matmul_flop_formula_and_measured_peak(monkeypatch):
    a, b = torch.randn(24, 40), torch.randn(40, 56)
    assert profiling.count_flops(lambda: a @ b)[0] == 2 * 24 * 40 * 56
    # The arithmetic of the measured peak: a fake clock that makes the repeats take 0.5, 0.25, 0.4 s.
    ticks = iter([0.0, 0.5, 1.0, 1.25, 2.0, 2.4])
    monkeypatch.setattr(profiling, "_clock", lambda: next(ticks))
    assert profiling.measure_matmul_peak(n=64, repeats=3) == pytest.approx(2 * 64**3 / 0.25)


def test_measured_cpu_peak_is_plausible():
    flops = profiling.measure_matmul_peak(n=256, repeats=3)
    assert 1e8 < flops < 1e14  # a CPU core does between 0.1 GFLOP/s and 100 TFLOP/s: catches unit slips
    peak, source = profiling.peak_flops("cpu", n=256, repeats=2)
    assert peak > 1e8 and source.startswith("measured: 256x256 fp32 matmul")


def test_gpu_peak_table_lookup():
    assert profiling.lookup_gpu_peak("NVIDIA H100 80GB HBM3", "bf16") == (989.5e12, "datasheet: NVIDIA H100 SXM, dense bf16")
    assert profiling.lookup_gpu_peak("NVIDIA H100 PCIe", "bf16")[0] == 756.5e12
    assert profiling.lookup_gpu_peak("NVIDIA H200", "tf32")[0] == 494.5e12
    assert profiling.lookup_gpu_peak("NVIDIA A100-SXM4-80GB", "tf32")[0] == 156e12
    assert profiling.lookup_gpu_peak("NVIDIA A10", "bf16")[0] == 125e12
    assert profiling.lookup_gpu_peak("NVIDIA A10G", "bf16") is None  # not mistaken for an A10 or an A100
    assert profiling.lookup_gpu_peak("Tesla T4", "tf32")[0] == 8.1e12  # no TF32 cores: the fp32 rate
    assert profiling.lookup_gpu_peak("Tesla T4", "bf16") is None
    assert profiling.lookup_gpu_peak("NVIDIA L4", "fp16")[0] == 121e12
    for _, label, peaks in profiling.GPU_PEAKS:  # tensor-core modes are faster than the CUDA cores' fp32
        chain = [peaks[k] for k in ("fp32", "tf32", "bf16") if peaks[k] is not None]
        assert chain == sorted(chain), label


def test_matmul_precision():
    before = torch.backends.cuda.matmul.allow_tf32  # a property of torch's module: set and restore by hand
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        assert profiling.matmul_precision(torch.float32, "cuda") == "tf32"
        assert profiling.matmul_precision(torch.float32, "cpu") == "fp32"
        assert profiling.matmul_precision(torch.bfloat16, "cuda") == "bf16"
        torch.backends.cuda.matmul.allow_tf32 = False
        assert profiling.matmul_precision(torch.float32, "cuda") == "fp32"
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before
    with pytest.raises(ValueError, match="dtype"):
        profiling.matmul_precision(torch.int8)


def test_mfu():
    assert profiling.mfu(3e12, 2.0, 1e13) == pytest.approx(0.15)
    for bad in [(0, 1.0, 1.0), (1.0, 0.0, 1.0), (1.0, 1.0, math.nan), (1.0, -1.0, 1.0)]:
        with pytest.raises(ValueError, match="mfu"):
            profiling.mfu(*bad)


def test_run_flops_scales_a_full_batch_to_the_real_tokens():
    """Counted on a full 4 x 32 batch and scaled to 4 x 8 real tokens, the FLOPs match those counted on the
    short batch itself up to the attention-score term (taken at the full length: an upper bound)."""
    model = tiny(dropout=0.0)
    full = profiling.random_mlm_batch(300, 4, 32, seed=0)
    short = profiling.random_mlm_batch(300, 4, 8, seed=1)
    f_full, f_short = profiling.count_step_flops(model, full), profiling.count_step_flops(model, short)
    scaled = profiling.run_flops(f_full, 4 * 32, 4 * 8)
    assert scaled >= f_short
    attention_gap = 3 * 2 * 2 * 2 * 4 * 8 * (32 - 8) * 64  # 3 (fwd+bwd) x L x 2 matmuls x 2 b s (s_full - s) d
    assert scaled - f_short == pytest.approx(attention_gap, rel=0.02)
    assert profiling.run_flops(100.0, 10, 25) == 250.0 and profiling.run_flops(100.0, 10, 0) == 0.0
    for bad in [(math.nan, 1, 1), (1.0, 0, 1), (1.0, 1, -1)]:
        with pytest.raises(ValueError, match="run_flops"):
            profiling.run_flops(*bad)


# -- the sampler --------------------------------------------------------------------------------------

def _sampler_threads():
    return [t for t in threading.enumerate() if t.name == "dwml-utilization-sampler" and t.is_alive()]


class FakeClock:
    """Time for the sampler that moves only when the sampler waits: ``wait(timeout)`` jumps to the deadline
    (plus any stall queued for that wait) and says stop once ``stop_at`` seconds have passed."""

    def __init__(self, stop_at: float, stalls: dict[int, float] | None = None):
        self.now, self.stop_at, self.stalls, self.waits = 0.0, stop_at, stalls or {}, []

    def __call__(self) -> float:
        return self.now

    def wait(self, timeout: float) -> bool:
        self.waits.append(timeout)
        self.now += timeout + self.stalls.get(len(self.waits), 0.0)
        return self.now >= self.stop_at


def test_sampler_records_at_its_interval_and_stops(tmp_path):
    clock = FakeClock(stop_at=2.0)  # binary fractions: every time below is exact
    with utilization.UtilizationSampler(interval_s=0.25, device="cpu", clock=clock, wait=clock.wait) as s:
        s._thread.join(timeout=30)  # the thread ends by itself once the fake clock says stop
    df = s.to_frame()
    assert not _sampler_threads()
    assert df["t"].tolist() == [0.25 * k for k in range(1, 8)]  # deadlines 0.25 .. 1.75; at 2.0 it stops
    assert clock.waits == [0.25] * 8
    assert list(df.columns) == ["t", "cpu_percent", "cpu_system_percent", "rss_mb"]
    # with a fake clock the real time between samples is microseconds, so psutil's percentages need not stay
    # under 100 here: this test is about when the sampler samples, not what psutil reports
    assert (df["rss_mb"] > 10).all() and (df["cpu_percent"] >= 0).all()
    summary = s.summary()
    assert summary["samples"] == 7 and summary["utilization_column"] == "cpu_percent"
    assert summary["mean_utilization"] == pytest.approx(df["cpu_percent"].mean())
    assert summary["duration_s"] == 2.0
    assert pd.read_csv(s.save_csv(tmp_path / "trace.csv")).shape == df.shape


def test_sampler_skips_the_deadlines_a_stall_missed():
    """A stall of 0.375 s in the 3rd wait (a loaded machine): that sample comes late (1.125 s), the missed
    deadline 1.0 is skipped instead of sampled at once in a burst, and the sampler goes on at the next
    deadline of the grid start + k x interval (1.25)."""
    clock = FakeClock(stop_at=2.0, stalls={3: 0.375})
    s = utilization.UtilizationSampler(interval_s=0.25, device="cpu", t_offset=10.0, clock=clock, wait=clock.wait)
    s.start()
    s._thread.join(timeout=30)
    s.stop()
    assert s.to_frame()["t"].tolist() == [10.25, 10.5, 11.125, 11.25, 11.5, 11.75]
    assert clock.waits == [0.25, 0.25, 0.25, 0.125, 0.25, 0.25, 0.25]


def test_utilization_column_is_gpu_only_when_every_table_has_it():
    cpu, gpu = ["t", "cpu_percent"], ["t", "cpu_percent", "gpu_util"]
    assert utilization.utilization_column([gpu, gpu]) == "gpu_util"
    assert utilization.utilization_column([gpu, cpu]) == "cpu_percent"
    assert utilization.utilization_column([]) == "cpu_percent"
    assert utilization.utilization_column(pd.DataFrame(columns=c).columns for c in (gpu,)) == "gpu_util"


def test_sampler_sees_a_busy_process():
    def sampled(busy: bool) -> float:
        with utilization.UtilizationSampler(interval_s=0.1, device="cpu") as s:
            end = time.monotonic() + 1.0
            while time.monotonic() < end:
                if not busy:
                    time.sleep(0.05)
        return s.summary()["mean_cpu_percent"]

    idle, busy = sampled(False), sampled(True)
    # A busy Python loop holds one core: 100 / cores percent, less on a loaded machine; idle is near 0.
    assert busy > idle + 5, (idle, busy)


def test_sampler_stops_cleanly_on_an_exception_and_reports_its_own_errors(monkeypatch):
    with pytest.raises(ZeroDivisionError):
        with utilization.UtilizationSampler(interval_s=0.05, device="cpu"):
            time.sleep(0.2)
            1 / 0
    assert not _sampler_threads()

    clock = FakeClock(stop_at=1.0)
    s = utilization.UtilizationSampler(interval_s=0.05, device="cpu", clock=clock, wait=clock.wait)
    monkeypatch.setattr(s, "_sample", lambda: (_ for _ in ()).throw(OSError("sensor gone")))
    s.start()
    s._thread.join(timeout=30)
    with pytest.raises(RuntimeError, match="sensor gone"):
        s.stop()
    assert not _sampler_threads()
    s.stop()  # idempotent


def test_sampler_bad_use():
    with pytest.raises(ValueError, match="interval_s"):
        utilization.UtilizationSampler(interval_s=0)
    s = utilization.UtilizationSampler(0.1, device="cpu")
    with pytest.raises(RuntimeError, match="never started"):
        s.stop()
    with s:
        with pytest.raises(RuntimeError, match="already started"):
            s.start()


# -- Table 9 and Figure 4 -------------------------------------------------------------------------------

def test_table9_claims_name_the_lowest_and_the_longest():
    records = [{"method": "mlm", "peers": 1, "avg_util_pct": 80.0, "flops_per_peer": 4e12, "train_time_s": 600},
               {"method": "dwml", "peers": 2, "avg_util_pct": 40.0, "flops_per_peer": 2e12, "train_time_s": 1500}]
    lines = profiling.table9_claims(profiling.table9(records), "dwml", "CPU")
    assert lines == ["CPU utilisation: lowest dwml (40.0%); dwml 40.0% (paper: 43.2% on an H100)",
                     "training time: longest dwml (25.00 min); dwml 25.00 min, +150% against the baseline"]
    assert profiling.table9_claims(profiling.table9(records), "kd", "CPU") == []


def test_table9_changes_against_the_baseline():
    records = [
        {"method": "mlm", "peers": 1, "avg_util_pct": 80.0, "flops_per_peer": [4e12], "train_time_s": 600, "tokens": 6e6},
        {"method": "dwml", "peers": 2, "avg_util_pct": 40.0, "flops_per_peer": [2e12, 1e12], "train_time_s": 1500},
    ]
    df = profiling.table9(records).set_index("method")
    assert df.loc["dwml", "util_change_pct"] == pytest.approx((40 - 80) / 80 * 100)
    assert df.loc["dwml", "tflops_per_peer"] == pytest.approx(1.5)
    assert df.loc["dwml", "flops_change_pct"] == pytest.approx((1.5 - 4) / 4 * 100)
    assert df.loc["dwml", "time_change_pct"] == pytest.approx(150.0)
    assert df.loc["mlm", "train_time_min"] == 10 and df.loc["mlm", "tokens_per_s"] == 1e4
    assert df.loc["dwml", "paper_avg_util_pct"] == 43.2 and math.isnan(df.loc["mlm", "paper_avg_util_pct"])
    with pytest.raises(ValueError, match="baseline 'kd'"):
        profiling.table9(records, baseline="kd")
    with pytest.raises(KeyError, match="train_time_s"):
        profiling.table9([{"method": "mlm", "peers": 1, "avg_util_pct": 1.0, "flops_per_peer": 1.0}])


def test_plot_utilisation_and_cost():
    import matplotlib

    matplotlib.use("Agg")
    from dwml.plots.profiling import plot_cost, plot_utilisation

    t = pd.Series([0.5, 1.0, 1.5])
    cpu = {"mlm": pd.DataFrame({"t": t, "cpu_percent": [50.0, 60.0, 70.0]}),
           "dwml": pd.DataFrame({"t": t, "cpu_percent": [20.0, 30.0, 40.0]})}
    fig = plot_utilisation(cpu, paper={"dwml": 43.2})
    ax = fig.axes[0]
    assert "CPU figures" in ax.get_title()
    assert [l.get_text() for l in ax.get_legend().get_texts()] == ["mlm (mean 60.0)", "dwml (mean 30.0)"]
    gpu = {k: v.rename(columns={"cpu_percent": "gpu_util"}) for k, v in cpu.items()}
    fig = plot_utilisation(gpu, paper={"dwml": 43.2}, device="NVIDIA H100")
    assert "GPU utilisation" in fig.axes[0].get_title()
    assert any("paper: dwml" in l.get_text() for l in fig.axes[0].get_legend().get_texts())
    with pytest.raises(KeyError, match="gpu_util"):
        plot_utilisation({"mlm": cpu["mlm"]}, column="gpu_util")
    table = profiling.table9([{"method": "mlm", "peers": 1, "avg_util_pct": 60, "flops_per_peer": 1e12, "train_time_s": 60},
                      {"method": "dwml", "peers": 2, "avg_util_pct": 30, "flops_per_peer": [1e12, 2e12], "train_time_s": 90}])
    assert len(plot_cost(table).axes) == 2


# -- on a GPU -------------------------------------------------------------------------------------------

@pytest.mark.gpu
def test_gpu_sampler_reads_nvml_while_a_kernel_loop_runs():
    a = torch.randn(4096, 4096, device="cuda")
    with utilization.UtilizationSampler(interval_s=0.2, device="cuda") as s:
        end = time.monotonic() + 2.0
        while time.monotonic() < end:
            a = torch.tanh(a @ a)
            torch.cuda.synchronize()
    df = s.to_frame()
    assert s.device_kind == "cuda", s.nvml_error
    assert {"gpu_util", "mem_util", "mem_used_mb", "power_w"} <= set(df.columns)
    assert df["gpu_util"].max() > 50 and (df["power_w"] > 0).all() and (df["mem_used_mb"] > 64).all()


@pytest.mark.gpu
def test_gpu_flops_and_peak():
    model = tiny(attn="sdpa", dropout=0.0).cuda()
    batch = profiling.random_mlm_batch(300, 2, 64, device="cuda")
    counted = profiling.count_step_flops(model, batch)  # flash / memory-efficient kernels: counted with recompute
    assert counted == profiling.analytic_step_flops(model, 128, 64, attention_recompute=True)
    peak, source = profiling.peak_flops("cuda", torch.bfloat16)
    assert peak > 1e12 and source.split(":")[0] in ("datasheet", "measured")
    if source.startswith("datasheet"):  # a listed GPU cannot beat its datasheet by more than clock boost
        assert profiling.measure_matmul_peak(torch.bfloat16, n=4096, device="cuda") < 1.2 * peak
