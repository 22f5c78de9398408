"""Losses of weighted mutual learning: the inner loss of eq. 2, its per-peer parts, the ensemble loss.

Notation (paper eq. 2-4; Zhang et al. 2022): peers i = 1..p give logits z_i over the vocabulary at the
masked positions of a batch, p_i = softmax(z_i / T), and w lies on the probability simplex. Every loss
here is a *mean per masked token* (positions whose label is ``IGNORE_INDEX`` do not count), so CE and KL
share one scale whatever the batch or block size. (The published implementation summed the KL over all
positions and divided by the batch size only, which made it ~500x the CE.)

The inner loss (eq. 2)

    L1(theta, w) = (1 - a) sum_i w_i CE(z_i, y) + a sum_i sum_{j != i} w_j KL(p_j || p_i)

is linear in w: collecting the terms that carry w_k gives L1 = sum_k w_k La_k with

    La_k = (1 - a) CE_k + a sum_{i != k} KL(p_k || p_i),

i.e. w_k weighs peer k's own label loss and how strongly it teaches the others. The hypergradient
(``dwml.bilevel``) needs the La_k one by one, so :func:`per_peer_losses` returns them.

Conventions, chosen once and used throughout:

* **Temperature.** KL terms are computed between ``softmax(z / T)`` and multiplied by T^2 (Hinton et
  al. 2015), so the gradient's scale does not shrink as 1/T^2 when T grows; at T = 1 nothing changes.
  CE and the ensemble loss always use T = 1 (they are the model's actual predictions).
* **Detached targets.** With ``detach_targets=True`` (deep mutual learning's convention) the target
  p_j in KL(p_j || p_i) is a constant: that term trains peer i only. With ``False`` the gradient also
  flows into peer j, pulling the teacher toward its student.
* **No masked token.** A batch with no predicted position gives a loss of 0 (still attached to the
  graph, so ``backward`` works and contributes nothing) rather than the NaN of an empty mean.
* **Precision.** Half-precision logits (bf16/fp16 under autocast) are upcast to float32 before the
  log-softmax; float64 stays float64 (the tests check the equations in float64). Every loss here runs
  with autocast switched off (:func:`float32_losses`): autocast would otherwise cast the matrix products
  inside them (the KL cross terms, the token-weighted sums) back to bf16.
* **Slices.** With ``rows`` > 0, :func:`fused_ce_kl` runs on slices of at most ``rows`` predicted
  positions and keeps only each slice's logits for the backward pass, recomputing its softmax there
  (``torch.utils.checkpoint``): every output is a sum over tokens, so the slices add up to the same
  values, and no [p, n, V] float32 tensor outlives its slice.
"""
from __future__ import annotations

import contextlib
import functools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dwml.config import check_alpha

IGNORE_INDEX = -100  # labels that the masked-LM loss skips (Hugging Face's convention); the one definition


# ----------------------------------------------------------------------------------------------------
# precision


def float32_losses(fn):
    """Run ``fn`` with CUDA and CPU autocast switched off (they are restored after): its matrix products
    then run in their inputs' dtype (float32 after :func:`_up`, float64 in the tests), not in bf16."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        on = [d for d in ("cuda", "cpu") if torch.is_autocast_enabled(d)]
        if not on:
            return fn(*args, **kwargs)
        with contextlib.ExitStack() as stack:
            for d in on:
                stack.enter_context(torch.autocast(d, enabled=False))
            return fn(*args, **kwargs)
    return wrapper


# ----------------------------------------------------------------------------------------------------
# checks


def validate_weights(weights: Tensor, name: str = "weights", tol: float = 1e-4) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``weights`` is a 1-D point of the simplex.

    That is: finite, non-negative and summing to 1 within ``tol``."""
    if not isinstance(weights, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(weights).__name__}")
    if weights.dim() != 1 or weights.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D tensor (one weight per peer), got shape {tuple(weights.shape)}")
    w = weights.detach().double().cpu()
    if not torch.isfinite(w).all():
        raise ValueError(f"{name}={w.tolist()} holds NaN or inf; peer weights must lie on the simplex")
    if (w < 0).any():
        raise ValueError(f"{name}={w.tolist()} has negative entries; peer weights must lie on the simplex")
    if abs(float(w.sum()) - 1.0) > tol:
        raise ValueError(f"{name}={w.tolist()} sums to {float(w.sum())!r}, not 1; peer weights must lie on the simplex")


def _check_temperature(temperature: float) -> float:
    t = float(temperature)
    if not (t > 0 and math.isfinite(t)):
        raise ValueError(f"temperature (train.temperature)={temperature!r}: must be a finite number > 0")
    return t


# ----------------------------------------------------------------------------------------------------
# per-token building blocks


def _up(t: Tensor) -> Tensor:
    """Half precision to float32 (a log-softmax over a vocabulary in bf16 loses the small probabilities)."""
    return t.float() if t.dtype in (torch.float16, torch.bfloat16) else t


def _select(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Logits [n, V] and labels [n] at the predicted positions; ``logits`` is [..., V], labels [...]."""
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits of shape {tuple(logits.shape)} do not match labels of shape "
                         f"{tuple(labels.shape)} (expected logits = labels.shape + (vocab,))")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # log-softmax over a vocabulary in half precision loses the small probabilities
    keep = labels != IGNORE_INDEX
    return logits[keep], labels[keep]


@float32_losses
def masked_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy per predicted token (labels != ``IGNORE_INDEX``); logits [..., V], labels [...]."""
    z, y = _select(logits, labels)
    if y.numel() == 0:
        return z.sum() * 0.0
    return F.cross_entropy(z, y, reduction="mean")


@float32_losses
def token_ce(logits: Tensor, targets: Tensor, weight: Tensor | None = None) -> Tensor:
    """Cross-entropy of logits [n, V] at the predicted positions against ``targets`` [n], summed with
    ``weight`` [n] (default 1/n: the mean per token; see :func:`fused_ce_kl`). Half precision is upcast."""
    logits = _up(logits)
    n = targets.shape[0]
    if weight is None:
        return F.cross_entropy(logits, targets) if n else logits.sum() * 0.0
    logp_y = F.log_softmax(logits, dim=-1).gather(-1, targets[:, None])[:, 0]
    return -(logp_y @ weight.to(logp_y.dtype))


@float32_losses
def masked_kl(target_logits: Tensor, logits: Tensor, labels: Tensor, temperature: float = 1.0,
              detach_target: bool = True) -> Tensor:
    """Mean over predicted tokens of KL(softmax(target / T) || softmax(logits / T)), times T^2.

    The KL term of eq. 2 with ``target_logits`` = z_j (the teacher) and ``logits`` = z_i (the student).
    ``detach_target`` makes the target a constant (deep mutual learning's convention)."""
    T = _check_temperature(temperature)
    zt, _ = _select(target_logits, labels)
    z, y = _select(logits, labels)
    if zt.shape != z.shape:
        raise ValueError(f"target logits {tuple(target_logits.shape)} and logits {tuple(logits.shape)} differ in shape")
    if y.numel() == 0:
        return (z.sum() + zt.sum()) * 0.0
    if detach_target:
        zt = zt.detach()
    lt, lz = F.log_softmax(zt / T, dim=-1), F.log_softmax(z / T, dim=-1)
    return (lt.exp() * (lt - lz)).sum(-1).mean() * (T * T)


# ----------------------------------------------------------------------------------------------------
# eq. 2


@dataclass
class InnerLoss:
    """The parts of eq. 2 for p peers on one batch (all means per predicted token)."""

    total: Tensor
    """L1 = (1 - a) sum_i w_i ce_i + a sum_i kl_i = sum_k w_k per_peer_k (a scalar)."""
    ce: Tensor
    """[p] each peer's CE(z_i, y)."""
    kl: Tensor
    """[p] the KL peer i receives, sum_{j != i} w_j KL(p_j || p_i), not yet multiplied by a."""
    per_peer: Tensor
    """[p] La_k = (1 - a) CE_k + a sum_{i != k} KL(p_k || p_i): the terms of L1 that carry w_k."""


def _kl_rows(logq: Tensor, logp: Tensor, weight: Tensor) -> Tensor:
    """K[j, i] = sum_t weight_t KL(q_j,t || p_i,t) for target log-probs ``logq`` [m, n, V] and student
    log-probs ``logp`` [p, n, V]: [m, p].

    KL(q || p) = sum_v q log q - sum_v q log p, and the second sum over (t, v) for every pair (j, i) is
    one matrix product of [m, n V] by [n V, p]: the m p KL terms cost one GEMM and one exp, not m p
    passes over [n, V] (and the same in the backward pass)."""
    q = logq.exp()
    qw = q * weight[None, :, None]
    neg_entropy = (qw * logq).sum((1, 2))  # [m]
    cross = qw.reshape(qw.shape[0], -1) @ logp.reshape(logp.shape[0], -1).T  # [m, p]
    return neg_entropy[:, None] - cross


@float32_losses
def fused_ce_kl(logits: Sequence[Tensor], targets: Tensor, weight: Tensor | None = None, temperature: float = 1.0,
                detach_targets: bool = True, target_logits: Sequence[Tensor] | None = None,
                teacher_logits: Tensor | None = None, pairs: bool = True, rows: int = 0, compiled: bool = False
                ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """CE [p], the KL matrix K [p, p] (K[j, i] = KL(p_j || p_i), zero diagonal) and, with a teacher,
    KT [p] = KL(p_T || p_i), from one log-softmax per peer (two at T != 1).

    ``logits``: each peer's [n, V] at the predicted positions, ``targets`` [n] their labels (every one
    predicted: no ``IGNORE_INDEX`` here). ``weight`` [n]: each token's weight in the sums, 1/n (the mean
    per token) by default; a chunk of several micro-batches passes 1/n_m for the tokens of micro-batch m,
    so that it sums their per-token means exactly as separate passes would. ``target_logits`` (constants)
    replace the peers' own logits on the targets' side, as in :func:`per_peer_losses`. ``pairs=False``
    skips K (returned as None) where only the teacher's terms are wanted. The teacher is a constant.
    KL terms are at temperature T, times T^2; CE at T = 1. Half-precision logits are upcast to float32.
    ``rows`` > 0: in slices of at most that many positions, each recomputed in the backward pass (the module
    docstring; the training loop passes ``train.loss_rows``). The same sums either way. ``compiled``: each
    piece through ``torch.compile`` (inductor fuses the passes over [p, n, V]; ``train.compile``)."""
    if len(logits) == 0:
        raise ValueError("logits is empty: eq. 2 needs at least one peer")
    T = _check_temperature(temperature)
    n = logits[0].shape[0]
    dtype = torch.float32 if logits[0].dtype in (torch.float16, torch.bfloat16) else logits[0].dtype
    if weight is None:
        weight = torch.full((n,), 1.0 / max(n, 1), dtype=dtype, device=logits[0].device)
    transformed = torch._C._are_functorch_transforms_active()  # forward-mode AD (the outer step): plain eager
    impl = _compiled_fused() if compiled and not transformed else _fused
    if rows and n > rows and torch.is_grad_enabled() and not transformed:
        return _sliced(impl, logits, targets, weight, T, detach_targets, target_logits, teacher_logits, pairs, rows)
    return impl(logits, targets, weight, T, detach_targets, target_logits, teacher_logits, pairs)


@functools.lru_cache(maxsize=1)
def _compiled_fused():
    """:func:`_fused` through ``torch.compile`` (dynamic shapes: the count of predicted positions varies)."""
    return torch.compile(_fused, dynamic=True)


def _sliced(impl, logits, targets, weight, T, detach_targets, target_logits, teacher_logits, pairs, rows):
    """:func:`_fused` summed over slices of ``rows`` positions, each under ``torch.utils.checkpoint`` (only
    the slice's inputs are kept; its softmax is recomputed in the backward pass). ``torch.split`` gives the
    slices as views whose backward is one concatenation, not one full-size gradient a slice."""
    from torch.utils.checkpoint import checkpoint

    def split(t):
        return None if t is None else torch.split(t, rows)

    zs = [split(z) for z in logits]
    tls = None if target_logits is None else [split(t) for t in target_logits]
    ys, ws, tch = split(targets), split(weight), split(teacher_logits)
    out = None
    for k in range(len(ys)):
        part = checkpoint(impl, [z[k] for z in zs], ys[k], ws[k], T, detach_targets,
                          None if tls is None else [t[k] for t in tls], None if tch is None else tch[k], pairs,
                          use_reentrant=False)
        out = part if out is None else tuple(None if a is None else a + b for a, b in zip(out, part))
    return out


def _fused(logits, targets, weight, T, detach_targets, target_logits, teacher_logits, pairs):
    """:func:`fused_ce_kl` on all positions at once (``weight`` given, T checked)."""
    z = torch.stack([_up(zi) for zi in logits])
    p, n = z.shape[0], z.shape[1]
    weight = weight.to(z.dtype)
    logp = F.log_softmax(z, dim=-1)  # [p, n, V]
    logp_y = logp.gather(-1, targets.expand(p, n)[..., None])[..., 0]  # [p, n]
    ce = -(logp_y @ weight)
    logp_t = logp if T == 1.0 else F.log_softmax(z / T, dim=-1)
    K = None
    if pairs:
        if target_logits is not None:
            zt = torch.stack([_up(t) for t in target_logits])
            logq = F.log_softmax(zt.detach().to(z.dtype) / T, dim=-1)
        else:
            logq = logp_t.detach() if detach_targets else logp_t
        K = _kl_rows(logq, logp_t, weight) * (T * T)
        K = K * (1.0 - torch.eye(p, dtype=K.dtype, device=K.device))  # the j = i terms are 0; make it exact
    kt = None
    if teacher_logits is not None:
        zt = _up(teacher_logits.detach())
        kt = _kl_rows(F.log_softmax(zt.to(z.dtype) / T, dim=-1)[None], logp_t, weight)[0] * (T * T)
    return ce, K, kt


def _ce_and_kl_matrix(logits: Sequence[Tensor], labels: Tensor, temperature: float, detach_targets: bool,
                      target_logits: Sequence[Tensor] | None = None, weight: Tensor | None = None,
                      predicted: bool = False):
    """CE [p] and the matrix K [p, p] with K[j, i] = KL(p_j || p_i) (zero diagonal), means per token.

    ``logits`` are [..., V] with ``labels`` [...] (positions labelled ``IGNORE_INDEX`` are dropped here;
    that selection asks the device for a count, so the training loop passes logits already at the
    predicted positions, with labels that are all predicted). ``target_logits`` (constants, same shapes as
    ``logits``) replace the peers' own logits on the targets' side p_j: a detached target is a function of
    theta frozen at the current point, and a finite difference in theta must hold it there to
    differentiate the same thing autograd does. ``weight``: see :func:`fused_ce_kl`. ``predicted``: logits
    [n, V] and labels [n] are the predicted positions already (nothing to select, nothing read back)."""
    if len(logits) == 0:
        raise ValueError("logits is empty: eq. 2 needs at least one peer")
    _check_temperature(temperature)
    if labels.dim() == 1 and all(z.dim() == 2 for z in logits) and (weight is not None or predicted):
        sel = [(z, labels) for z in logits]  # already the predicted positions
    else:
        sel = [_select(z, labels) for z in logits]
    y = sel[0][1]
    zs = [s[0] for s in sel]
    if any(z.shape != zs[0].shape for z in zs):
        raise ValueError(f"peers' logits differ in shape {[tuple(z.shape) for z in logits]}; they must share the vocabulary")
    p = len(zs)
    if y.shape[0] == 0:
        zero = torch.stack(zs).sum() * 0.0
        return zero.expand(p) + 0.0, zero.expand(p, p) + 0.0
    zt = None
    if target_logits is not None:
        zt = [t if (t.dim() == 2 and t.shape == zs[0].shape) else _select(t, labels)[0] for t in target_logits]
        if any(t.shape != zs[0].shape for t in zt) or len(zt) != p:
            raise ValueError(f"target_logits {[tuple(t.shape) for t in target_logits]} do not match the peers' "
                             f"logits {[tuple(z.shape) for z in zs]}")
    ce, K, _ = fused_ce_kl(zs, y, weight, temperature, detach_targets, target_logits=zt)
    return ce, K


@float32_losses
def inner_loss(logits: Sequence[Tensor], labels: Tensor, weights: Tensor, alpha: float, temperature: float = 1.0,
               detach_targets: bool = True, *, validate: bool = True, token_weight: Tensor | None = None,
               predicted: bool = False) -> InnerLoss:
    """Eq. 2 on one batch: ``logits`` holds each peer's [..., V] logits, ``labels`` [...], ``weights`` [p].

    ``validate=False`` skips the simplex check (derivative checks evaluate L1 at w off the simplex;
    L1 is defined for any w; the training loop validates w where it changes, not at every micro-batch,
    since the check reads w back from the device). ``token_weight`` [n]: the logits are [n, V] at the
    predicted positions and each token weighs this much (see :func:`fused_ce_kl`)."""
    a = check_alpha(alpha)
    if validate:
        validate_weights(weights, "weights")
    if weights.dim() != 1 or weights.numel() != len(logits):
        raise ValueError(f"weights has shape {tuple(weights.shape)} but there are {len(logits)} peers")
    ce, K = _ce_and_kl_matrix(logits, labels, temperature, detach_targets, weight=token_weight, predicted=predicted)
    total, kl = combine(ce, K, weights, a)
    per_peer = (1.0 - a) * ce + a * K.sum(1)  # La_k = (1 - a) CE_k + a sum_i K[k, i]
    return InnerLoss(total=total, ce=ce, kl=kl, per_peer=per_peer)


@float32_losses
def combine(ce: Tensor, K: Tensor, weights: Tensor, alpha: float) -> tuple[Tensor, Tensor]:
    """Eq. 2 from its parts: (L1 = (1 - a) sum_i w_i ce_i + a sum_i kl_i, kl [p]) with kl_i = sum_j w_j K[j, i],
    in the parts' dtype (``weights`` is cast to it; autocast off: ``w @ K`` is a matrix product)."""
    w = weights.to(device=ce.device, dtype=ce.dtype)
    kl = w @ K
    return (1.0 - alpha) * (w * ce).sum() + alpha * kl.sum(), kl


@float32_losses
def per_peer_losses(logits: Sequence[Tensor], labels: Tensor, alpha: float, temperature: float = 1.0,
                    detach_targets: bool = True, target_logits: Sequence[Tensor] | None = None,
                    token_weight: Tensor | None = None, predicted: bool = False) -> Tensor:
    """La_k for k = 1..p (see the module docstring): L1(theta, w) = sum_k w_k La_k(theta) for every w.

    ``target_logits``: constant logits for the targets' side of the KL terms (see ``_ce_and_kl_matrix``)."""
    a = check_alpha(alpha)
    ce, K = _ce_and_kl_matrix(logits, labels, temperature, detach_targets, target_logits, weight=token_weight,
                              predicted=predicted)
    return (1.0 - a) * ce + a * K.sum(1)


# ----------------------------------------------------------------------------------------------------
# the outer loss


@float32_losses
def ensemble_loss(logits: Sequence[Tensor], labels: Tensor, weights: Tensor, kind: str = "mixture", *,
                  validate: bool = True, predicted: bool = False) -> Tensor:
    """L2 of eq. 3: mean cross-entropy per predicted token of the w-weighted ensemble. ``predicted``: logits
    [n, V] and labels [n] are the predicted positions already (nothing selected, nothing read back).

    ``kind="mixture"``: the ensemble predicts q = sum_i w_i p_i (p_i = softmax(z_i)), so
    L2 = -mean log sum_i w_i p_i[y]. It is evaluated in log space, log q[y] = m + log sum_i w_i
    exp(log p_i[y] - m) with m = max_i (log w_i + log p_i[y]): the logsumexp of log w_i + log p_i[y],
    written so that a weight of exactly 0 still has its finite derivative -p_i[y] / q[y].
    ``kind="logits"``: the ensemble is softmax(sum_i w_i z_i), L2 = CE(sum_i w_i z_i, y)."""
    if validate:
        validate_weights(weights, "weights")
    if weights.dim() != 1 or weights.numel() != len(logits):
        raise ValueError(f"weights has shape {tuple(weights.shape)} but there are {len(logits)} peers")
    sel = [(_up(z), labels) if predicted else _select(z, labels) for z in logits]
    y = sel[0][1]
    z = torch.stack([s[0] for s in sel])  # [p, n, V]
    w = weights.to(device=z.device, dtype=z.dtype)
    if y.shape[0] == 0:
        return z.sum() * 0.0 + w.sum() * 0.0
    if kind == "mixture":
        # Only log p_i[y] is needed: [p, n], small enough to finish in float64 (exp's range is then e^709).
        logp_y = F.log_softmax(z, dim=-1).gather(-1, y.expand(len(logits), -1)[..., None])[..., 0].double()
        # from ``weights`` itself, not through z's dtype: d L2 / d w_k = -p_k[y] / q[y] can exceed float32's
        # range when peer k is sure of a token the ensemble finds unlikely, and its gradient would become inf.
        w64 = weights.to(device=z.device, dtype=torch.float64)
        # m = max_i (log w_i + log p_i[y]): a constant shift (no gradient needed through the max) that makes the
        # largest term exactly 1; zero weights drop out of it. The clamp only touches terms with w_i = 0
        # (for w_i > 0 the exponent is at most -log w_i), whose exp could overflow and give 0 * inf.
        m = (logp_y + torch.log(w64.clamp_min(0.0))[:, None]).detach().max(0).values
        log_q = m + torch.log((w64[:, None] * torch.exp((logp_y - m).clamp_max(700.0))).sum(0))
        return -log_q.mean().to(z.dtype)
    if kind == "logits":
        return F.cross_entropy(torch.einsum("p,pnv->nv", w, z), y)
    raise ValueError(f"ensemble (train.ensemble)={kind!r}: must be 'mixture' or 'logits'")
