"""Training methods as small strategies for the one loop in ``dwml.train``.

A method says three things and nothing else: which loss the peers minimise on a training micro-batch
(:meth:`Method.loss`), whether there is an outer step on the peer weights w (:meth:`Method.outer_step`),
and how the peers are scored on dev batches (:meth:`Method.eval_losses`). Optimisers, the schedule,
accumulation, checkpoints and logging belong to the loop, so a baseline is a class of a dozen lines, not
a copy of the loop.

=========  ==============================================================================================
``mlm``    each model alone on the masked-LM cross-entropy (the baseline RoBERTa recipe)
``sd``     each model alone with self-distillation from its deepest exit (Zhang et al. 2019, adapted)
``kd``     each model alone from labels and a fixed teacher (Hinton et al. 2015)
``dml``    deep mutual learning: the peers together, eq. 2 with equal fixed weights, no outer loop
``dwml``   the paper's method: eq. 2 with weights w learned by mirror descent on the hypergradient (eq. 3, 4)
``kd_dwml`` DWML with the teacher's distribution as one more fixed target in every peer's loss
=========  ==============================================================================================

Speed: every method runs its models through :func:`dwml.model.predicted_logits` (the LM head at the
predicted positions only) and takes CE and KL terms from one log-softmax per model
(:func:`dwml.losses.fused_ce_kl`), weighting each token by the batch's ``token_weight`` (1/n: the
per-token mean; a merged chunk of micro-batches keeps each one's own mean). Nothing in :meth:`Method.loss`
reads a value back from the device: the loop's micro-batches run without a host synchronisation.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dwml.config import METHODS, ConfigError, TrainConfig
from dwml.losses import check_alpha, combine, ensemble_loss, fused_ce_kl, token_ce, validate_weights
from dwml.model import predicted_logits, prediction_index, prediction_targets


def register(cls: type) -> type:
    """Class decorator: enter a :class:`Method` subclass in :data:`METHODS` under its ``name``, the one list
    of method names (``Config`` validates ``train.method`` against it, the runs and studies read its traits)."""
    if cls.name in METHODS and METHODS[cls.name] is not cls:
        raise ValueError(f"method name {cls.name!r} is taken by {METHODS[cls.name].__qualname__}")
    twin = [n for n, c in METHODS.items() if cls.paper_name and c.paper_name == cls.paper_name and n != cls.name]
    if twin:  # a subclass inherits its parent's paper_name: a new method sets its own, or ""
        raise ValueError(f"method {cls.name!r}: paper_name {cls.paper_name!r} is taken by {twin[0]!r}")
    METHODS[cls.name] = cls
    return cls


def method_class(name: str) -> type["Method"]:
    """The registered class of method ``name`` (its traits: ``uses_teacher``, ``single_model``, ...)."""
    if name not in METHODS:
        raise ConfigError(f"train.method={name!r}: must be one of {', '.join(METHODS)}")
    return METHODS[name]


def with_traits(names: Sequence[str], **traits) -> list[str]:
    """The methods among ``names``, in their order, whose class has every given trait value
    (``with_traits(names, single_model=True, uses_teacher=False)``); an unknown trait raises."""
    for trait in traits:
        if not hasattr(Method, trait):
            raise AttributeError(f"with_traits: methods have no trait {trait!r}")
    return [n for n in names if all(getattr(method_class(n), t) == v for t, v in traits.items())]


def single_model_method(names: Sequence[str]) -> str | None:
    """The first of ``names`` that trains one model alone, without a teacher: the paper's single-model
    baseline (``mlm``); None when there is none."""
    return next(iter(with_traits(names, single_model=True, uses_teacher=False)), None)


def dwml_method(names: Sequence[str]) -> str | None:
    """The first of ``names`` that learns the peer weights without a teacher: the paper's method (``dwml``);
    None when there is none."""
    return next(iter(with_traits(names, learns_weights=True, uses_teacher=False)), None)


def teacher_method(names: Sequence[str]) -> str | None:
    """The method whose run teaches the methods of ``names`` that use a teacher: the single-model method of
    ``names``, else the first registered one. None when no method of ``names`` uses a teacher and none trains a
    single model (nothing to teach, no teacher to train)."""
    mine = single_model_method(names)
    if mine or not with_traits(names, uses_teacher=True):
        return mine
    return single_model_method(list(METHODS))


def training_order(names: Sequence[str]) -> list[str]:
    """``names`` in the order their runs can be trained: the teacher (:func:`teacher_method`) first, added
    when only the methods that use it are listed, then the others in their order."""
    teacher = teacher_method(names)
    return ([teacher] if teacher else []) + [n for n in names if n != teacher]


class Method:
    """Base strategy: p independent models trained on their own cross-entropy (this *is* ``mlm``).

    Attributes the loop reads: ``models`` (the peers that get saved), ``learns_weights`` (whether to
    call :meth:`outer_step`), ``weights`` (tensor on the simplex, or None) and :meth:`peer_modules`
    (what peer i's optimiser updates and its gradient clipping covers). Class traits that callers read
    without building one (through :func:`method_class`): ``uses_teacher``, ``single_model`` and
    ``paper_name``.
    """

    name = "mlm"
    learns_weights = False  # has an outer step on the peer weights w (the loop calls outer_step)
    uses_teacher = False  # needs a fixed teacher (train.teacher_dir: a finished single-model run's peer_0)
    single_model = False  # trains one teacher-sized model instead of the searched peers (dwml.runs)
    paper_name = ""  # the method's label in the paper's tables ("" for a method the paper does not have)

    def __init__(self, models: Sequence[nn.Module], cfg: TrainConfig, teacher: nn.Module | None = None):
        if len(models) == 0:
            raise ValueError(f"method {self.name!r} needs at least one model")
        self.models = list(models)
        self.cfg = cfg
        self.alpha = check_alpha(cfg.loss_alpha, "train.loss_alpha")
        self.teacher = teacher
        if self.uses_teacher and teacher is None:
            raise ConfigError(f"train.method={self.name!r} needs a teacher: set train.teacher_dir to a folder "
                              "written by save_pretrained (e.g. a finished 'mlm' run's peer_0)")
        if teacher is not None:
            teacher.eval().requires_grad_(False)  # fixed: never trained, dropout off
        self.weights: torch.Tensor | None = None

    @property
    def p(self) -> int:
        return len(self.models)

    def peer_modules(self, i: int) -> list[nn.Module]:
        return [self.models[i]]

    def _forward(self, batch):
        """Each peer's logits [n, V] at the predicted positions, and their labels [n]."""
        return [predicted_logits(m, batch)[0] for m in self.models], prediction_targets(batch)

    def _teacher_logits(self, batch) -> torch.Tensor:
        with torch.no_grad():
            return predicted_logits(self.teacher, batch)[0]

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss to back-propagate on one micro-batch (or chunk), and detached per-peer metrics (``ce``,
        maybe ``kl``), each a sum over tokens weighted by ``batch['token_weight']``.

        Independent models: the sum of their CEs, whose gradient for peer i is its own CE's (each peer
        has its own optimiser and clipping, so this is p separate trainings sharing the batches)."""
        logits, y = self._forward(batch)
        ce = torch.stack([token_ce(z, y, batch.get("token_weight")) for z in logits])
        return ce.sum(), {"ce": ce.detach()}

    def eval_weights(self) -> torch.Tensor:
        """The weights of the dev ensemble: w where the method has them, else equal."""
        if self.weights is not None:
            return self.weights
        return torch.full((self.p,), 1.0 / self.p)

    @torch.no_grad()
    def eval_losses(self, batches: Sequence[dict]) -> dict:
        """Per-peer dev CE and the dev ensemble loss L2 (``cfg.ensemble``), averaged over masked tokens."""
        was = [m.training for m in self.models]
        for m in self.models:
            m.eval()
        try:
            ce_sum = torch.zeros(self.p, dtype=torch.float64)
            ens_sum, n_sum = 0.0, 0
            for batch in batches:
                logits, labels = self._forward(batch)
                n = int(labels.numel())
                if n == 0:
                    continue
                w = self.eval_weights().to(logits[0].device)
                ce_sum += torch.stack([token_ce(z, labels) for z in logits]).double().cpu() * n
                ens_sum += float(ensemble_loss(logits, labels, w, kind=self.cfg.ensemble)) * n
                n_sum += n
        finally:
            for m, t in zip(self.models, was):
                m.train(t)
        if n_sum == 0:
            raise ValueError("dev batches hold no masked token to score")
        return {"dev_ce": (ce_sum / n_sum).tolist(), "dev_ensemble": ens_sum / n_sum}

    def outer_step(self, train_batch: dict, dev_batch: dict, lr: float, eta: float,
                   reuse_grad: bool = False, check: bool = True) -> torch.Tensor | None:
        """No outer loop for fixed-weight methods. (``check=False``: read nothing back; the caller checks g.)"""
        return None

    def state_dict(self) -> dict:
        return {"weights": None if self.weights is None else self.weights.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("weights") is not None:
            w = state["weights"].to(self.weights.device, self.weights.dtype)
            validate_weights(w, "checkpoint weights")
            self.weights = w


@register
class MLM(Method):
    """``mlm``: each model alone on the masked-LM cross-entropy (eq. 2 with a = 0 and one peer)."""

    single_model = True
    paper_name = "RoBERTa-base-125M"


@register
class TeacherKD(Method):
    """``kd`` (Hinton et al. 2015): each model alone learns from labels and a fixed teacher,

        L_i = (1 - a) CE(z_i, y) + a KL(p_T || p_i)  at temperature T,

    the shape of eq. 2 with the teacher in place of the peers. The teacher is the project's own ``mlm``
    model (``TrainConfig.teacher_dir``) and must share the peers' tokenizer."""

    name = "kd"
    paper_name = "KD"
    uses_teacher = True

    def loss(self, batch):
        logits, y = self._forward(batch)
        ce, _, kl = fused_ce_kl(logits, y, batch.get("token_weight"), self.cfg.temperature,
                                teacher_logits=self._teacher_logits(batch), pairs=False, rows=self.cfg.loss_rows,
                                compiled=self.cfg.compile)
        total = ((1 - self.alpha) * ce + self.alpha * kl).sum()
        return total, {"ce": ce.detach(), "kl": kl.detach()}


class ExitHead(nn.Module):
    """An extra MLM head on an intermediate layer, for self-distillation.

    Dense, GELU and LayerNorm like RoBERTa's head, then the model's own word embeddings as the output
    matrix (tied, as RoBERTa ties its head), so an exit adds only hidden^2 + 2 hidden + vocab parameters."""

    def __init__(self, model: nn.Module):
        super().__init__()
        head = model.lm_head
        # Start from the final head's (initial) transform: same initialisation scheme, no extra knobs.
        self.dense = copy.deepcopy(head.dense)
        self.layer_norm = copy.deepcopy(head.layer_norm)
        emb = model.get_input_embeddings()
        self.bias = nn.Parameter(torch.zeros(emb.weight.shape[0], dtype=emb.weight.dtype, device=emb.weight.device))
        self._embeddings = [emb]  # a list: not registered, so not owned twice

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.layer_norm(F.gelu(self.dense(h)))
        return F.linear(x, self._embeddings[0].weight, self.bias)


@register
class SelfDistillation(Method):
    """``sd``: each model alone, with self-distillation from its deepest exit.

    "Be your own teacher" (Zhang et al. 2019) splits a ResNet into sections, gives each shallow section a
    classifier, and trains every classifier on the labels and (with KL at temperature T) on the deepest
    classifier's softmax, plus an L2 hint between features. For a masked LM the "classifier" is an MLM
    head over the vocabulary at the masked positions, and the sections are transformer layers: model i
    with L layers gets an :class:`ExitHead` after each of its layers 1..L-1 (``exits`` picks others). Each
    shallow exit k minimises ``(1 - a) CE(z_k, y) + a KL(p_deep || p_k)``; the deepest exit (the model's
    own head, the one that is saved and evaluated) learns from the labels alone. The feature hint is left
    out: a transformer's exits all read the same residual stream, and pulling early layers' states toward
    the last one's would fight the depth rather than teach it. The exit heads are training-only and are
    not saved with the peer (BYOT likewise discards its shallow classifiers at inference).
    """

    name = "sd"
    paper_name = "SD"

    def __init__(self, models, cfg, teacher=None, exits: Sequence[Sequence[int]] | None = None):
        super().__init__(models, cfg, teacher)
        self.exits: list[list[int]] = []
        self.heads: list[nn.ModuleList] = []
        for i, m in enumerate(self.models):
            n_layers = m.config.num_hidden_layers
            layers = list(range(1, n_layers)) if exits is None else [int(k) for k in exits[i]]
            bad = [k for k in layers if not 1 <= k < n_layers]
            if bad:
                raise ConfigError(f"self-distillation exits {bad} of peer {i}: must lie in 1..{n_layers - 1} "
                                  f"(peer {i} has {n_layers} layers; the deepest is its own head)")
            self.exits.append(layers)
            self.heads.append(nn.ModuleList([ExitHead(m) for _ in layers]))

    def peer_modules(self, i):
        return [self.models[i], self.heads[i]]

    def loss(self, batch):
        total, ces, kls = 0.0, [], []
        y, weight = prediction_targets(batch), batch.get("token_weight")
        for m, exits, heads in zip(self.models, self.exits, self.heads):
            deep, hidden = predicted_logits(m, batch, output_hidden_states=bool(exits))
            kl = deep.new_zeros(())
            if not exits:
                ce = token_ce(deep, y, weight)
            else:
                zs = [head(hidden[k]) for k, head in zip(exits, heads)]
                if self.cfg.detach_targets:  # the deepest exit as a fixed teacher of every shallow one
                    ce = token_ce(deep, y, weight)
                    ce_k, _, kl_k = fused_ce_kl(zs, y, weight, self.cfg.temperature, teacher_logits=deep, pairs=False,
                                                rows=self.cfg.loss_rows,
                                                compiled=self.cfg.compile)
                else:  # the target learns from its students too: row 0 of the live KL matrix
                    ce_all, K, _ = fused_ce_kl([deep] + zs, y, weight, self.cfg.temperature, detach_targets=False,
                                               rows=self.cfg.loss_rows,
                                               compiled=self.cfg.compile)
                    ce, ce_k, kl_k = ce_all[0], ce_all[1:], K[0, 1:]
                total = total + ((1 - self.alpha) * ce_k + self.alpha * kl_k).sum()
                kl = kl_k.sum()
            total = total + ce
            ces.append(ce.detach())
            kls.append(kl.detach())
        return total, {"ce": torch.stack(ces), "kl": torch.stack(kls)}

    def state_dict(self):
        return {**super().state_dict(), "heads": [h.state_dict() for h in self.heads]}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        for h, s in zip(self.heads, state["heads"]):
            h.load_state_dict(s)


@register
class DML(Method):
    """``dml`` (deep mutual learning, Zhang et al. 2018): the inner loss of eq. 2 with fixed weights w
    (equal, 1/p, unless given), summed over the peers; no outer step."""

    name = "dml"
    paper_name = "DML"

    def __init__(self, models, cfg, teacher=None, weights: Sequence[float] | torch.Tensor | None = None):
        super().__init__(models, cfg, teacher)
        device = next(self.models[0].parameters()).device
        if weights is None:
            w = torch.full((self.p,), 1.0 / self.p, device=device)
        else:
            w = torch.as_tensor(weights, dtype=torch.float32, device=device)
            if w.shape != (self.p,):
                raise ValueError(f"weights has shape {tuple(w.shape)}; expected ({self.p},), one per peer")
        validate_weights(w, "weights")
        self.weights = w

    def _inner(self, batch, teacher: bool = False):
        """Eq. 2 on one micro-batch: (L1, ce [p], kl [p] = sum_j w_j K[j, i], and with ``teacher`` the
        KL each peer takes from the teacher). w is not validated here (that would read it back from the
        device at every micro-batch): it is checked where it changes, in :meth:`DWML.outer_step`."""
        if self.cfg.published_kl:
            return self._inner_published_kl(batch, teacher)
        logits, y = self._forward(batch)
        target = self._teacher_logits(batch) if teacher else None
        ce, K, kl_t = fused_ce_kl(logits, y, batch.get("token_weight"), self.cfg.temperature,
                                  self.cfg.detach_targets, teacher_logits=target, rows=self.cfg.loss_rows,
                                  compiled=self.cfg.compile)
        total, kl = combine(ce, K, self.weights, self.alpha)  # kl_i = sum_j w_j KL(p_j || p_i)
        return total, ce, kl, kl_t

    def _inner_published_kl(self, batch, teacher: bool = False):
        """:meth:`_inner` with the published code's KL scale (``train.published_kl``): CE (and a teacher's KL)
        as usual, the peers' KL matrix summed over every non-padding position of the micro-batch, masked
        or not, and divided by its number of rows. One forward pass: the LM head runs at every real
        position and the CE reads the predicted ones from those rows."""
        idx, rows = real_positions(batch)
        at = torch.searchsorted(idx, prediction_index(batch))  # predicted positions within the real ones
        full = [predicted_logits(m, {**batch, "pred_index": idx})[0] for m in self.models]
        y = prediction_targets(batch)
        target = self._teacher_logits(batch) if teacher else None
        ce, _, kl_t = fused_ce_kl([z.index_select(0, at) for z in full], y, batch.get("token_weight"),
                                  self.cfg.temperature, teacher_logits=target, pairs=False)
        per_row = torch.full((idx.numel(),), 1.0 / rows, device=idx.device)
        _, K, _ = fused_ce_kl(full, torch.zeros_like(idx), per_row, self.cfg.temperature, self.cfg.detach_targets,
                              rows=self.cfg.loss_rows,
                              compiled=self.cfg.compile)
        total, kl = combine(ce, K, self.weights, self.alpha)
        return total, ce, kl, kl_t

    def loss(self, batch):
        total, ce, kl, _ = self._inner(batch)
        return total, {"ce": ce.detach(), "kl": kl.detach()}


def real_positions(batch: dict) -> tuple[torch.Tensor, int]:
    """The flat indices (row * width + col, ascending) of a batch's non-padding positions, and its rows."""
    ids = batch["input_ids"]
    if "segment_ids" in batch:
        real = batch["segment_ids"] != 0
    elif "attention_mask" in batch:
        real = batch["attention_mask"] != 0
    else:
        real = torch.ones_like(ids, dtype=torch.bool)
    return torch.nonzero(real.reshape(-1)).flatten(), int(ids.shape[0])


@register
class DWML(DML):
    """``dwml``: eq. 2 inner loss with weights w on the simplex, learned in an outer loop.

    Every ``weight_update_frequency`` inner steps the loop calls :meth:`outer_step` with a training
    micro-batch and a dev micro-batch (``train.outer_grad``: the step's own batch and gradient, or a fresh
    batch after the step): the hypergradient of the dev ensemble loss L2 with respect to w
    through one inner step of size gamma = the current learning rate (eq. 3, ``dwml.bilevel``), then one
    mirror-descent (exponentiated-gradient) step of size eta (eq. 4), which keeps w on the simplex."""

    name = "dwml"
    paper_name = "DWML"
    learns_weights = True

    def outer_step(self, train_batch, dev_batch, lr, eta, reuse_grad=False, check=True):
        """``check=False`` reads nothing back from the device (the loop checks g at its next read-back, and
        w stays on the simplex for any finite g by the form of eq. 4)."""
        from dwml.bilevel import hypergradient, mirror_descent_step, published_outer_step

        if self.cfg.published_hypergradient:  # the published code's step: a softmin of the dev CEs
            g, w = published_outer_step(self.models, dev_batch, self.weights, eta, self.cfg.num_batches,
                                        self.cfg.grad_clip)
            validate_weights(w, "weights after the published outer step")
            self.weights = w.detach()
            return g.detach()

        # (hypergradient runs the peers in eval mode and restores them: see dwml.bilevel on dropout.)
        # reuse_grad: theta' from the .grad the loop's backward left (train.outer_grad='reuse').
        g = hypergradient(self.models, train_batch, dev_batch, self.weights, alpha=self.alpha, gamma=lr,
                          temperature=self.cfg.temperature, detach_targets=self.cfg.detach_targets,
                          ensemble=self.cfg.ensemble, mode=self.cfg.hypergrad_mode, reuse_grad=reuse_grad,
                          validate=check)
        if not check:
            self.weights = mirror_descent_step(self.weights, g.to(self.weights.device), eta, validate=False).detach()
            return g.detach()
        if not torch.isfinite(g).all():
            raise FloatingPointError(f"non-finite hypergradient {g.tolist()} (peer(s) "
                                     f"{torch.nonzero(~torch.isfinite(g)).flatten().tolist()})")
        w = mirror_descent_step(self.weights, g.to(self.weights.device), eta)
        validate_weights(w, "weights after the mirror-descent step")
        self.weights = w.detach()
        return g.detach()


@register
class KDDWML(DWML):
    """``kd_dwml``: DWML with the teacher as one more, fixed, target in every peer's loss:

        loss = eq. 2 + a * w_T * sum_i KL(p_T || p_i),  w_T = 1/p,

    so the teacher weighs as much as one peer at equal weights. The teacher term does not depend on w,
    so the hypergradient of eq. 3 (a mixed derivative in theta and w) is unchanged by it and DWML's outer
    step serves as is."""

    name = "kd_dwml"
    paper_name = "KD_DWML"
    uses_teacher = True

    def loss(self, batch):
        total, ce, kl, kl_t = self._inner(batch, teacher=True)
        total = total + self.alpha * kl_t.sum() / self.p
        return total, {"ce": ce.detach(), "kl": kl.detach(), "kl_teacher": kl_t.detach()}


def make_method(cfg: TrainConfig, models: Sequence[nn.Module], teacher: nn.Module | None = None, **kwargs) -> Method:
    """The strategy named by ``cfg.method`` over ``models`` (keyword arguments go to its constructor)."""
    return method_class(cfg.method)(models, cfg, teacher, **kwargs)
