"""One run on several processes (``torchrun``): ranks, the gradient all-reduce of the peers, and the outer
step's sums across ranks.

A run of N processes with micro-batch B computes what one process with micro-batch N x B computes:

* batches (``dwml.batches.MLMBatcher`` with ``shard=(rank, N)``): every rank draws the same global micro-batch
  of N x B rows from the same generator and keeps rows ``rank*B .. rank*B+B-1``, each predicted token
  weighted 1/n with n the global micro-batch's count of predicted tokens. The streams are disjoint and
  reproducible, every rank knows the global counts without a message, and batcher states are the same on
  every rank (one checkpoint serves all);
* gradients: the peers run under one :class:`~torch.nn.parallel.DistributedDataParallel` (:class:`LossModule`),
  ``no_sync`` until the step's last chunk; each rank back-propagates N x its share of the global mean
  (the sum over its tokens / n), so DDP's average over ranks is the global mean's gradient, not a mean of
  per-rank means (the role of the HF Trainer's ``num_items_in_batch``);
* the outer step (:class:`RankSums`, used by ``dwml.bilevel``): see its docstring.

Only rank 0 writes files; every rank reads the run folder (several nodes need it on a shared file system).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.distributed as dist
from torch import Tensor, nn

from dwml.config import ConfigError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the run: ``rank`` of ``world`` processes, ``local_rank`` on its node."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def env_ranks() -> Ranks:
    """The ranks torchrun (or any launcher setting ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) gives; one process
    otherwise."""
    try:
        return Ranks(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                     int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError as err:
        raise ConfigError(f"RANK/WORLD_SIZE/LOCAL_RANK must be integers ({err})") from None


def setup(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group when launched on several ranks (gloo on the CPU, nccl on CUDA), once per process;
    returns the ranks and this rank's device (:func:`rank_device` of ``device``)."""
    ranks = env_ranks()
    device = rank_device(device, ranks)
    if ranks.active and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                **({"device_id": device} if device.type == "cuda" else {}))
    if ranks.active and (dist.get_world_size() != ranks.world or dist.get_rank() != ranks.rank):
        raise ConfigError(f"the process group ({dist.get_rank()} of {dist.get_world_size()}) is not the one the "
                          f"environment names (RANK={ranks.rank}, WORLD_SIZE={ranks.world})")
    return ranks, device


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """CUDA: the GPU of ``LOCAL_RANK`` on its node (a device index in train.device is then refused: with
    several ranks it would put every rank on one GPU); the CPU stays the CPU."""
    if not ranks.active or device.type != "cuda":
        return device
    if device.index not in (None, ranks.local_rank):
        raise ConfigError(f"train.device={str(device)!r} with {ranks.world} ranks: use 'cuda' or 'auto' (each rank "
                          "takes the GPU of its LOCAL_RANK)")
    dev = torch.device("cuda", ranks.local_rank)
    torch.cuda.set_device(dev)
    return dev


def barrier(ranks: Ranks) -> None:
    if ranks.active:
        dist.barrier()


def gather_rows(values: Sequence[float], ranks: Ranks, device: torch.device) -> list[list[float]]:
    """Every rank's list of numbers (each the same length), on every rank: ``[[rank 0's], [rank 1's], ...]``."""
    if not ranks.active:
        return [list(values)]
    mine = torch.tensor(list(values), dtype=torch.float64, device=device)
    out = [torch.empty_like(mine) for _ in range(ranks.world)]
    dist.all_gather(out, mine)
    return [t.cpu().tolist() for t in out]


def broadcast_float(value: float, ranks: Ranks, device: torch.device) -> float:
    """Rank 0's number on every rank (the dev loss that decides early stopping)."""
    if not ranks.active:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, 0)
    return float(t.item())


def gather_objects(obj, ranks: Ranks) -> list:
    """Every rank's picklable ``obj`` (RNG states for the checkpoint), on every rank."""
    if not ranks.active:
        return [obj]
    out = [None] * ranks.world
    dist.all_gather_object(out, obj)
    return out


def check_same(tensor: Tensor, name: str, ranks: Ranks) -> None:
    """Raise on every rank if ``tensor`` is not bit-identical on all ranks (the learned weights w after each
    outer step: a rank that drifted would train another objective without any error)."""
    if not ranks.active:
        return
    rows = gather_rows(tensor.detach().double().flatten().tolist(), ranks, tensor.device)
    if any(r != rows[0] for r in rows[1:]):
        raise RuntimeError(f"{name} differs across ranks: " + "; ".join(f"rank {i}: {r}" for i, r in enumerate(rows)))


class LossModule(nn.Module):
    """The peers' trainable modules as one module whose forward is the method's training loss, so that one
    ``DistributedDataParallel`` holds every peer (and SD's exit heads). ``method.loss`` reaches the peers'
    encoders and heads directly (``dwml.model.predicted_logits``), so a wrapper per model would never see
    its forward; this one does. The teacher of KD is not in it: frozen, it is a plain replica on each rank."""

    def __init__(self, method, modules: Sequence[nn.Module]):
        super().__init__()
        self.parts = nn.ModuleList(modules)
        self._method = [method]  # a list: the method is not a module

    def forward(self, batch: dict):
        return self._method[0].loss(batch)


def wrap_peers(method, ranks: Ranks, device: torch.device):
    """The method's trainable modules under one DDP (rank 0's parameters broadcast to every rank), or None on
    one process."""
    if not ranks.active:
        return None
    from torch.nn.parallel import DistributedDataParallel as DDP

    seen, modules = set(), []
    for i in range(method.p):
        for m in method.peer_modules(i):
            if id(m) not in seen:
                seen.add(id(m))
                modules.append(m)
    # broadcast_buffers off: the peers' buffers (position ids) are constants, not state to keep in step
    return DDP(LossModule(method, modules), device_ids=[device.index] if device.type == "cuda" else None,
               broadcast_buffers=False)


class RankSums:
    """Sums across ranks for ``dwml.bilevel.hypergradient``, which makes the outer step exact on N ranks.

    The losses of the outer step are means over predicted tokens: on the union of the ranks' micro-batches,
    L = sum_r (n_r / n) L_r, where L_r is rank r's mean over its n_r tokens and n = sum_r n_r. Every
    derivative is linear in L, so each term of g is the n_r / n-weighted sum of the ranks' own:

    * theta' = theta - gamma grad L1: 'reuse' takes ``.grad``, which DDP already averaged into the union's
      gradient; 'recompute' sums (m_r / m) grad L1_r over the train micro-batch (:meth:`train_grad`);
    * v = grad_theta L2(theta') and the direct term dL2/dw: (n_r / n)-weighted sums over the dev micro-batch
      (:meth:`dev`, one gradient-sized all-reduce), so every rank then takes its JVP along the same v;
    * the p values <grad La_k(theta), v> (or their central difference): (m_r / m)-weighted sums over the
      train micro-batch (:meth:`train_values`).

    So g = direct - gamma dot is what one process computes on the union, up to the order of the sums;
    every rank gets the same sums from the all-reduce, hence the same g and the same w (checked by the loop
    after each outer step). The all-reduces run on the unwrapped modules' tensors: forward-mode AD does
    not pass through DDP."""

    def __init__(self, ranks: Ranks):
        self.ranks = ranks

    def _share(self, n: int, device) -> float:
        total = torch.tensor([float(n)], dtype=torch.float64, device=device)
        dist.all_reduce(total)
        return n / float(total.item()) if float(total.item()) > 0 else 0.0

    def _weighted_sum(self, tensors: list[Tensor], n: int) -> list[Tensor]:
        """sum_r (n_r / n) t_r for each tensor, as one flat all-reduce."""
        share = self._share(n, tensors[0].device)
        flat = torch.cat([t.reshape(-1) for t in tensors])
        flat = torch.zeros_like(flat) if n == 0 else flat * share  # a rank without tokens: its mean is 0/0
        dist.all_reduce(flat)
        out, at = [], 0
        for t in tensors:
            out.append(flat[at:at + t.numel()].view_as(t))
            at += t.numel()
        return out

    def train_grad(self, grads: list[Tensor], n: int) -> list[Tensor]:
        return self._weighted_sum(grads, n)

    def dev(self, direct: Tensor, v: list[Tensor], n: int) -> tuple[Tensor, list[Tensor]]:
        out = self._weighted_sum([direct] + list(v), n)
        return out[0], out[1:]

    def train_values(self, dot: Tensor, n: int) -> Tensor:
        return self._weighted_sum([dot], n)[0]


def sum_counts(values: Sequence[int], ranks: Ranks, device: torch.device) -> list[int]:
    """Counts (tokens of the step) summed over the ranks, on every rank."""
    if not ranks.active:
        return list(values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return [int(round(v)) for v in t.cpu().tolist()]
