"""Where float32 matrix products may round to TF32, as a context instead of a process-wide switch.

On an Ampere or later GPU a float32 matmul may run on the tensor cores in TF32 (10-bit mantissa, ~1e-3
relative rounding). That is harmless in the inner step's forward and backward (under bf16 autocast most
products are bf16 anyway), and wrong in the outer step: the hypergradient of eq. 3 is a small difference of
large terms, and its finite-difference mode steps theta by ~5e-3 (``dwml.bilevel``). So the loop turns TF32
on only around the inner step, when ``train.tf32`` asks for it, and :func:`matmul_precision` (False) holds
the outer step in IEEE float32 whatever the process had set. PyTorch's three switches are set together and
restored on exit, exceptions included: ``torch.backends.cuda.matmul.allow_tf32``,
``torch.backends.cudnn.allow_tf32`` and ``torch.get_float32_matmul_precision()`` (which the first one
moves too). They are plain flags, settable on a CPU build, so the tests check them on the CPU.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import torch


def tf32_state() -> tuple[bool, bool, str | None]:
    """(cuda matmul allow_tf32, cudnn allow_tf32, float32 matmul precision) as PyTorch holds them now; the
    precision is None where the process has set the backends apart with PyTorch's newer per-backend API
    (then it has no single value, and only the two flags are restored)."""
    try:
        precision = torch.get_float32_matmul_precision()
    except RuntimeError:  # "a mix of the legacy and new APIs": no one value to read
        precision = None
    return bool(torch.backends.cuda.matmul.allow_tf32), bool(torch.backends.cudnn.allow_tf32), precision


def _set(state: tuple[bool, bool, str | None]) -> None:
    # The precision first: it moves allow_tf32 too. The flag is set after it only where it still differs
    # (setting it needlessly would split the backends, e.g. 'medium' is TF32 on CUDA and bf16 on the CPU).
    if state[2] is not None:
        torch.set_float32_matmul_precision(state[2])
    if bool(torch.backends.cuda.matmul.allow_tf32) != state[0]:
        torch.backends.cuda.matmul.allow_tf32 = state[0]
    if bool(torch.backends.cudnn.allow_tf32) != state[1]:
        torch.backends.cudnn.allow_tf32 = state[1]


@contextlib.contextmanager
def matmul_precision(tf32: bool) -> Iterator[None]:
    """Within the block, float32 matmuls and convolutions may use TF32 (``tf32=True``: precision 'high')
    or must not ('highest', both ``allow_tf32`` flags False); the three flags are restored on exit."""
    if not isinstance(tf32, bool):
        raise TypeError(f"tf32={tf32!r}: must be True or False (train.tf32)")
    before = tf32_state()
    try:
        _set((True, True, "high") if tf32 else (False, False, "highest"))
        yield
    finally:
        _set(before)
