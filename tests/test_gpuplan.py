"""dwml.gpuplan: the cost model's FLOPs are FlopCounterMode's on the same step, its bytes are the operations'
tensors, its times follow the roofline it states, and the step it traces on meta tensors is the real one."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from dwml import gpuplan
from conftest import tiny_roberta


def tiny_models(device="cpu"):
    torch.manual_seed(0)
    with torch.device(device):
        return [tiny_roberta(97, l, h, 2, positions=40) for l, h in ((2, 32), (1, 16))]


def test_oplog_counts_the_bytes_of_each_operation_and_the_flops_of_a_matmul():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with gpuplan.OpLog() as log:
        with log.at("x"):
            (a @ b).relu()
    mm, relu = log.ops
    assert (mm.name, mm.phase, mm.kind, mm.flops) == ("aten.mm", "x", "matmul", 2 * 8 * 16 * 4)
    assert mm.bytes == 4 * (8 * 16 + 16 * 4 + 8 * 4)
    assert relu.kind == "other" and relu.bytes == 4 * 2 * 8 * 4


def test_step_flops_on_meta_equal_flop_counter_mode_on_the_real_step():
    """The same forward + backward + outer step: traced on meta tensors, and counted by PyTorch's
    FlopCounterMode on real CPU tensors with a real batch's shapes."""
    meta_ops = gpuplan.step_ops(tiny_models("meta"), 3, 32, 14, outer=True)
    real = tiny_models()
    with FlopCounterMode(display=False) as fc:
        real_ops = gpuplan.step_ops(real, 3, 32, 14, outer=True)  # OpLog inside, FlopCounterMode outside
    assert fc.get_total_flops() > 0
    assert sum(o.flops for o in meta_ops) == pytest.approx(fc.get_total_flops(), rel=1e-9)
    # the same matrix products in the same order (elementwise kernels differ between meta and CPU decompositions)
    assert [(o.name, o.flops) for o in meta_ops if o.kind == "matmul"] == \
        [(o.name, o.flops) for o in real_ops if o.kind == "matmul"]
    assert any(o.name.startswith("aten._scaled_dot_product_flash") for o in meta_ops)  # fused attention stands in
    phases = list(dict.fromkeys(o.phase for o in meta_ops))
    assert phases == ["peer 0 forward", "peer 1 forward", "LM heads + loss", "loss backward", "peer 0 backward",
                      "peer 1 backward", "outer step"]


def test_roofline_launch_bound_and_fusion():
    dev = gpuplan.Device("toy", bf16=100.0, tf32=50.0, fp32=10.0, bandwidth=1.0, gemm_eff=1.0, mem_eff=1.0,
                         launch_s=0.5, compiled_launch_s=0.25)
    mm = gpuplan.Op("p", "aten.mm", 200.0, 1.0, "matmul", torch.bfloat16)
    assert gpuplan.kernel_time(mm, dev, tf32=False) == 2.0  # compute-bound: 200 / 100
    f32 = gpuplan.Op("p", "aten.mm", 200.0, 1.0, "matmul", torch.float32)
    assert gpuplan.kernel_time(f32, dev, tf32=True) == 4.0 and gpuplan.kernel_time(f32, dev, tf32=False) == 20.0
    ew = [gpuplan.Op("p", "aten.add", 0.0, 6.0, "other", torch.float32) for _ in range(3)]
    assert gpuplan.kernel_time(ew[0], dev, tf32=False) == 6.0  # memory-bound
    fused = gpuplan.fuse([mm] + ew + [mm])
    assert [o.name for o in fused] == ["aten.mm", "fused x3", "aten.mm"] and fused[1].bytes == 6.0
    eager = gpuplan.phase_costs(ew, dev)[0]
    assert (eager.kernels, eager.device_s, eager.host_s) == (3, 18.0, 1.5)
    comp = gpuplan.phase_costs(ew, dev, compiled=("p",), repeat=2)[0]
    assert (comp.kernels, comp.device_s, comp.bytes, comp.host_s) == (2, 12.0, 12.0, 0.5)


def test_the_outer_step_launches_one_update_for_all_parameters_and_counts_no_metadata_queries():
    """theta' = theta - gamma grad is one multi-tensor operation, not a multiply and a subtract a parameter
    (the launches that decide the paper-shaped step's predicted MFU); forward-mode AD's storage checks
    (``_has_same_storage_numel``, a bool from tensor metadata) launch nothing and are not counted."""
    models = tiny_models("meta")
    n_params = sum(1 for m in models for _ in m.parameters())
    outer = [o for o in gpuplan.step_ops(models, 3, 32, 14, outer=True) if o.phase == "outer step"]
    names = [o.name for o in outer]
    assert names.count("aten._foreach_add") == 1
    assert "aten._has_same_storage_numel" not in names
    # the update alone would be 2 operations a parameter; the whole outer step's elementwise subtractions
    # (the update's and the model's own) stay below one a parameter
    assert names.count("aten.sub") < n_params
