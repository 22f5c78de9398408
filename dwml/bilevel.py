"""The outer loop of DWML: the hypergradient of eq. 3 and mirror descent of eq. 4.

The bi-level problem (paper eq. 3; Zhang et al. 2022): the peers' parameters theta minimise the inner
loss L1(theta, w) of eq. 2 on training data, and the weights w minimise the outer loss L2(theta*(w), w),
the cross-entropy of the w-weighted ensemble on held-out (dev) data. theta*(w) is replaced by one
unrolled inner step, theta'(w) = theta - gamma grad_theta L1(theta, w), so

    g_k = dL2(theta'(w), w) / dw_k
        = dL2/dw_k (theta', w)  -  gamma < grad_theta L2(theta', w), grad_theta La_k(theta) >

because L1 = sum_k w_k La_k is linear in w (``dwml.losses``), hence dtheta'/dw_k = -gamma grad La_k.
The p inner products are one Jacobian-vector product of theta -> (La_1, ..., La_p) along
v = grad_theta L2(theta', w): no Hessian is formed and no p backward passes are needed. Cost of
:func:`hypergradient`: one forward + backward on the train batch (for theta'), one forward + backward on
the dev batch (for v and the direct term), and then either

* ``mode="jvp"``: one forward pass in forward-mode AD (``torch.func.jvp``), exact; or
* ``mode="fd"``: two plain forward passes, the central difference
  (La(theta + h v/|v|) - La(theta - h v/|v|)) |v| / 2h, with error O(h^2) + O(eps_machine / h).

With ``reuse_grad=True`` the first forward + backward is skipped: grad_theta L1(theta, w) is read from the
parameters' ``.grad``, which the training loop's backward of the inner loss has just filled at this very
theta and w (``dwml.train`` calls the outer step between that backward and the optimizer step). That is
the same theta' on the same batch, one forward + backward cheaper, with two differences from the
recomputed one: the loop's gradient was taken with dropout on (one draw of the stochastic inner step),
and it is the gradient of everything the loop's loss holds (e.g. ``kd_dwml``'s teacher term, which does
not depend on w) averaged over all of the step's micro-batches, while the JVP below sees ``train_batch``.

Approximations and choices, stated once:

* The unrolled step is plain SGD with gamma = the current learning rate, although the peers are
  trained with AdamW; Zhang et al. (2022) make the same one-step SGD approximation.
* Dropout: the whole computation runs with the peers in eval mode (their modes are restored after), so
  the hypergradient is the derivative of one deterministic function of w and the two passes of
  ``fd`` see the same network; it also leaves the training loop's RNG stream untouched.
* Autocast is switched off inside: the hypergradient is a small difference of large terms, and
  forward-mode AD is not defined for every reduced-precision kernel.
* Nothing is written to the models: parameters are read, never modified, and ``.grad`` stays as it was
  (gradients are taken with ``torch.autograd.grad`` on detached copies through
  ``torch.func.functional_call``).

On several ranks (``dwml.distributed``), the loop runs the outer step inside :func:`across_ranks`: each
rank computes on its own micro-batches, and theta' (when recomputed), v with the direct term, and the p
JVP values are summed across ranks, weighted by each rank's count of predicted tokens. Every loss here is
a mean over tokens, so these sums are exactly the union's terms (``dwml.distributed.RankSums`` says why).
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from dwml.losses import check_alpha, ensemble_loss, inner_loss, per_peer_losses, validate_weights
from dwml.model import predicted_logits, prediction_targets

MODES = ("jvp", "fd")
_RANK_SUMS: contextvars.ContextVar = contextvars.ContextVar("dwml_rank_sums", default=None)


@contextlib.contextmanager
def across_ranks(sums) -> Iterator[None]:
    """Within the block, :func:`hypergradient` sums its terms across ranks with ``sums`` (a
    ``dwml.distributed.RankSums``; None: this process alone)."""
    token = _RANK_SUMS.set(sums)
    try:
        yield
    finally:
        _RANK_SUMS.reset(token)


# ----------------------------------------------------------------------------------------------------
# the p peers as one function of one parameter dict


class _Peers(nn.Module):
    """All peers side by side, so that ``functional_call`` can evaluate them at any theta = {name: tensor}.

    Each peer runs through :func:`dwml.model.predicted_logits` (the LM head at the predicted positions
    only, in any batch layout), so the result is each peer's logits [n, V] and the labels [n]."""

    def __init__(self, models: Sequence[nn.Module]):
        super().__init__()
        self.peers = nn.ModuleList(models)

    def forward(self, batch: dict) -> tuple[list[Tensor], Tensor]:
        return [predicted_logits(m, batch)[0] for m in self.peers], prediction_targets(batch)


def _theta(peers: _Peers) -> dict[str, Tensor]:
    """The trainable parameters of all peers, detached (tied weights appear once, under their first name)."""
    return {k: v.detach() for k, v in peers.named_parameters() if v.requires_grad}


def _grad(loss: Tensor, inputs: Sequence[Tensor]) -> list[Tensor]:
    gs = torch.autograd.grad(loss, list(inputs), allow_unused=True)
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, gs)]


# ----------------------------------------------------------------------------------------------------
# eq. 3


def hypergradient(models: Sequence[nn.Module], train_batch: dict, dev_batch: dict, weights: Tensor, *,
                  alpha: float, gamma: float, temperature: float = 1.0, detach_targets: bool = True,
                  ensemble: str = "mixture", mode: str = "jvp", fd_eps: float | None = None,
                  validate: bool = True, reuse_grad: bool = False) -> Tensor:
    """g = dL2(theta'(w), w)/dw with theta' = theta - gamma grad_theta L1(theta, w) (eq. 3); shape [p].

    ``models`` are the p peers (``model(input_ids=..., attention_mask=...).logits``); the batches are
    dicts of LongTensors ``input_ids``, ``attention_mask``, ``labels`` [B, T] (labels ``IGNORE_INDEX``
    where nothing is predicted); ``weights`` is w [p]; ``alpha``, ``temperature``, ``detach_targets``
    define L1 (eq. 2) and ``ensemble`` L2 (``dwml.losses``). ``gamma`` is the inner step size (the
    loop passes the current learning rate). ``mode`` is 'jvp' (exact) or 'fd' (central difference of
    step ``fd_eps`` along grad L2, by default eps_machine^(1/3) max(1, rms(theta))). ``validate=False``
    accepts w off the simplex (the derivative is defined for any w; the tests use it). ``reuse_grad``
    takes grad_theta L1 from the parameters' ``.grad`` (filled by the caller's backward of L1 at this
    theta and w; a parameter without ``.grad`` counts as zero) instead of recomputing it on ``train_batch``.
    Returns g on ``weights``' device and dtype."""
    if len(models) == 0:
        raise ValueError("models is empty: the hypergradient needs at least one peer")
    if weights.dim() != 1 or weights.numel() != len(models):
        raise ValueError(f"weights has shape {tuple(weights.shape)} but there are {len(models)} peers")
    if validate:
        validate_weights(weights, "weights")
    check_alpha(alpha)
    if not (float(gamma) >= 0 and math.isfinite(float(gamma))):
        raise ValueError(f"gamma (the inner step size, i.e. the learning rate)={gamma!r}: must be finite and >= 0")
    if mode not in MODES:
        raise ValueError(f"mode (train.hypergrad_mode)={mode!r}: must be 'jvp' or 'fd'")
    if ensemble not in ("mixture", "logits"):
        raise ValueError(f"ensemble (train.ensemble)={ensemble!r}: must be 'mixture' or 'logits'")
    if fd_eps is not None and not (float(fd_eps) > 0 and math.isfinite(float(fd_eps))):
        raise ValueError(f"fd_eps={fd_eps!r}: must be a finite number > 0")

    peers = _Peers(models)
    was_training = [m.training for m in models]
    peers.eval()
    device = next(peers.parameters()).device
    try:
        # (meta tensors, which the cost model of dwml.gpuplan runs on, have no autocast to switch off)
        no_autocast = (torch.autocast(device_type=device.type, enabled=False) if device.type in ("cuda", "cpu")
                       else contextlib.nullcontext())
        with torch.enable_grad(), no_autocast:
            g = _hypergradient(peers, train_batch, dev_batch, weights, float(alpha), float(gamma), temperature,
                               detach_targets, ensemble, mode, fd_eps, reuse_grad)
    finally:
        for m, t in zip(models, was_training):
            m.train(t)
    return g.to(device=weights.device, dtype=weights.dtype)


def _hypergradient(peers, train_batch, dev_batch, weights, alpha, gamma, temperature, detach_targets, ensemble,
                   mode, fd_eps, reuse_grad=False) -> Tensor:
    sums = _RANK_SUMS.get()
    theta = _theta(peers)
    names = list(theta)
    dtype = theta[names[0]].dtype
    w = weights.detach().to(device=theta[names[0]].device, dtype=dtype)

    def f(params: dict[str, Tensor], batch: dict):
        return functional_call(peers, params, (batch,), strict=False)

    # theta' = theta - gamma grad_theta L1(theta, w): one forward + backward on the train batch, or the
    # gradient the caller's backward left in .grad.
    if reuse_grad:
        params = dict(peers.named_parameters())
        g1 = [torch.zeros_like(theta[k]) if params[k].grad is None else params[k].grad.detach().to(dtype)
              for k in names]
    else:
        leaf = {k: t.detach().requires_grad_(True) for k, t in theta.items()}  # aliases: no copy, own autograd flag
        z, y = f(leaf, train_batch)
        L1 = inner_loss(z, y, w, alpha, temperature, detach_targets, validate=False, predicted=True).total
        g1 = _grad(L1, [leaf[k] for k in names])
        if sums is not None:  # the union's mean over the ranks' train micro-batches
            g1 = sums.train_grad(g1, y.numel())
        del leaf, z, L1
    # one multi-tensor kernel for every parameter, not a multiply and a subtract each (~700 launches at the
    # paper's 344 parameter tensors)
    theta1 = dict(zip(names, torch._foreach_add([theta[k] for k in names], g1, alpha=-gamma)))
    for t in theta1.values():
        t.requires_grad_(True)
    del g1

    # v = grad_theta L2(theta', w) and the direct term dL2/dw: one forward + backward on the dev batch.
    w_leaf = w.clone().requires_grad_(True)
    z, y = f(theta1, dev_batch)
    L2 = ensemble_loss(z, y, w_leaf, ensemble, validate=False, predicted=True)
    grads = _grad(L2, [w_leaf] + [theta1[k] for k in names])
    direct, vs = grads[0], grads[1:]
    if sums is not None:  # the union's dev mean: every rank takes its JVP along the same v
        direct, vs = sums.dev(direct, vs, y.numel())
    v = dict(zip(names, vs))
    del theta1, z, L2, grads, vs

    frozen = None
    if mode == "fd" and detach_targets:
        # A detached target has no derivative, but a perturbed forward pass would move it: freeze the
        # targets at theta so that both differences see the function whose gradient autograd takes.
        # (Forward-mode AD needs no such care: the tangent of a detached tensor is zero.)
        with torch.no_grad():
            frozen, _ = f(theta, train_batch)

    def La(params: dict[str, Tensor]) -> Tensor:
        zz, yy = f(params, train_batch)
        return per_peer_losses(zz, yy, alpha, temperature, detach_targets, target_logits=frozen, predicted=True)

    if mode == "jvp":
        # < grad La_k(theta), v > for all k: the tangent of theta -> (La_1..La_p) along v.
        # Fused attention kernels (flash / memory-efficient, CPU and CUDA) have no forward-mode derivative;
        # the math backend of scaled_dot_product_attention is made of differentiable ops and does.
        with sdpa_kernel(SDPBackend.MATH):
            _, dot = jvp(La, (theta,), (v,))
    else:
        dot = _central_difference(La, theta, v, fd_eps)
    if sums is not None:  # the union's mean over the ranks' train micro-batches
        dot = sums.train_values(dot, int(prediction_targets(train_batch).numel()))
    return direct - gamma * dot


def _central_difference(La: Callable[[dict], Tensor], theta: dict[str, Tensor], v: dict[str, Tensor],
                        fd_eps: float | None) -> Tensor:
    """< grad La(theta), v > ~ |v| (La(theta + h u) - La(theta - h u)) / 2h with u = v / |v|.

    The step h is a length in parameter space; by default eps_machine^(1/3) max(1, rms(theta)), the usual
    balance of the O(h^2) truncation error against the O(eps / h) rounding error, scaled to the size of a
    typical parameter. (Scaling by the norm |theta| instead grows with sqrt(#parameters) and, on the tests'
    float32 peers, made h ~0.16 and the error 2.5%; the rms gives h ~0.005 and 1e-4.)"""
    vnorm = torch.sqrt(sum((t.double() ** 2).sum() for t in v.values()))
    if float(vnorm) == 0.0:
        p = La(theta).detach()
        return torch.zeros_like(p)
    first = next(iter(theta.values()))
    if fd_eps is None:
        sq = sum((t.double() ** 2).sum() for t in theta.values())
        rms = float(torch.sqrt(sq / sum(t.numel() for t in theta.values())))
        fd_eps = torch.finfo(first.dtype).eps ** (1.0 / 3.0) * max(1.0, rms)
    h = float(fd_eps)
    scale = h / float(vnorm)
    with torch.no_grad():
        plus = La({k: t + scale * v[k] for k, t in theta.items()})
        minus = La({k: t - scale * v[k] for k, t in theta.items()})
    return (plus.double() - minus.double()).to(plus.dtype) * (float(vnorm) / (2.0 * h))


# ----------------------------------------------------------------------------------------------------
# the published code's outer step (train.published_hypergradient)


def published_outer_step(models: Sequence[nn.Module], dev_batch: dict, weights: Tensor, eta: float,
                         num_batches: int, grad_clip: float) -> tuple[Tensor, Tensor]:
    """One outer step as the published code takes it; returns (its "hypergradient" g [p], the new w).

    Its outer loss is linear in w, L2 = sum_k w_k CE_k / num_batches (each peer's mean cross-entropy on the
    dev batch), and the second term of eq. 3 differentiates a detached copy of La, so it is zero. Hence

        g_k = clamp(CE_k / num_batches, 0, grad_clip)   (no clamp when grad_clip = 0)
        w_k <- w_k exp(-eta g_k) / sum_j w_j exp(-eta g_j),

    a softmin of the dev cross-entropies, unrelated to how w shapes the peers' training. The peers run in
    eval mode, without autocast (their modes are restored after); nothing is written to them."""
    if weights.dim() != 1 or weights.numel() != len(models):
        raise ValueError(f"weights has shape {tuple(weights.shape)} but there are {len(models)} peers")
    if num_batches < 1:
        raise ValueError(f"num_batches (train.num_batches)={num_batches!r}: must be >= 1")
    was_training = [m.training for m in models]
    device = next(models[0].parameters()).device
    try:
        for m in models:
            m.eval()
        with torch.no_grad(), torch.autocast(device_type=device.type, enabled=False):
            y = prediction_targets(dev_batch)
            ce = torch.stack([torch.nn.functional.cross_entropy(predicted_logits(m, dev_batch)[0].float(), y)
                              for m in models])
    finally:
        for m, t in zip(models, was_training):
            m.train(t)
    g = ce.to(device=weights.device, dtype=weights.dtype) / num_batches
    if grad_clip != 0:
        g = g.clamp(0.0, float(grad_clip))
    return g, mirror_descent_step(weights, g, eta)


# ----------------------------------------------------------------------------------------------------
# eq. 4


def mirror_descent_step(weights: Tensor, grad: Tensor, eta: float, validate: bool = True) -> Tensor:
    """One step of mirror descent on the simplex (eq. 4, exponentiated gradient):

        w_k <- w_k exp(-eta g_k) / sum_j w_j exp(-eta g_j).

    Evaluated as w_k exp(-eta (g_k - min g)) / sum: the shift cancels in the ratio and keeps every
    exponent <= 0, so nothing overflows however large eta g is. ``validate=False`` skips the checks that
    read w and g back from the device (the training loop checks g at its next read-back)."""
    if validate:
        validate_weights(weights, "weights")
    if grad.shape != weights.shape:
        raise ValueError(f"grad has shape {tuple(grad.shape)}; expected {tuple(weights.shape)} like weights")
    if validate and not torch.isfinite(grad).all():
        raise ValueError(f"grad={grad.tolist()} (the hypergradient) holds NaN or inf")
    if not (float(eta) >= 0 and math.isfinite(float(eta))):
        raise ValueError(f"eta (train.step_size)={eta!r}: the mirror-descent step must be finite and >= 0")
    g = grad.to(weights.dtype)
    unnorm = weights * torch.exp(-float(eta) * (g - g.min()))
    return unnorm / unnorm.sum()
