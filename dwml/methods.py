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

Speed: a masked LM predicts only ~15% of positions, so every method computes the LM head at those
positions alone (:func:`masked_logits`): at the small widths of the peers the head (hidden x vocab) costs
more than a transformer layer, and this saves most of it without changing any loss.
"""
from __future__ import annotations

import copy
import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dwml.config import ConfigError, TrainConfig
from dwml.losses import IGNORE_INDEX, ensemble_loss, inner_loss, masked_ce, masked_kl, validate_weights

METHODS = ("mlm", "sd", "kd", "dml", "dwml", "kd_dwml")


def masked_logits(model: nn.Module, batch: dict, output_hidden_states: bool = False):
    """The model's logits at the predicted positions only: ``(logits [n, V], labels [n], hidden)``.

    ``hidden`` is the tuple of every layer's hidden states at those positions (embeddings first), or None.
    For a ``RobertaForMaskedLM`` the encoder runs on the whole block and the LM head on the n selected
    positions; any other masked LM falls back to its full forward.
    """
    labels = batch["labels"]
    keep = labels != IGNORE_INDEX
    encoder, head = getattr(model, "roberta", None), getattr(model, "lm_head", None)
    if encoder is None or head is None:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    output_hidden_states=output_hidden_states)
        hidden = tuple(h[keep] for h in out.hidden_states) if output_hidden_states else None
        return out.logits[keep], labels[keep], hidden
    out = encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  output_hidden_states=output_hidden_states)
    logits = head(out.last_hidden_state[keep])
    hidden = tuple(h[keep] for h in out.hidden_states) if output_hidden_states else None
    return logits, labels[keep], hidden


def check_alpha(alpha: float) -> float:
    if not (0.0 <= float(alpha) <= 1.0) or math.isnan(float(alpha)):
        raise ConfigError(f"train.loss_alpha={alpha!r}: a in eq. 2 must lie in [0, 1]")
    return float(alpha)


class Method:
    """Base strategy: p independent models trained on their own cross-entropy (this *is* ``mlm``).

    Attributes the loop reads: ``models`` (the peers that get saved), ``learns_weights`` (whether to
    call :meth:`outer_step`), ``weights`` (tensor on the simplex, or None) and :meth:`peer_modules`
    (what peer i's optimiser updates and its gradient clipping covers).
    """

    name = "mlm"
    learns_weights = False
    uses_teacher = False

    def __init__(self, models: Sequence[nn.Module], cfg: TrainConfig, teacher: nn.Module | None = None):
        if len(models) == 0:
            raise ValueError(f"method {self.name!r} needs at least one model")
        self.models = list(models)
        self.cfg = cfg
        self.alpha = check_alpha(cfg.loss_alpha)
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
        outs = [masked_logits(m, batch) for m in self.models]
        return [o[0] for o in outs], outs[0][1]

    def _teacher_logits(self, batch) -> torch.Tensor:
        with torch.no_grad():
            return masked_logits(self.teacher, batch)[0]

    def loss(self, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss to back-propagate on one micro-batch, and detached per-peer metrics (``ce``, maybe ``kl``).

        Independent models: the sum of their CEs, whose gradient for peer i is its own CE's (each peer
        has its own optimiser and clipping, so this is p separate trainings sharing the batches)."""
        logits, labels = self._forward(batch)
        ce = torch.stack([masked_ce(z, labels) for z in logits])
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
                ce_sum += torch.stack([masked_ce(z, labels) for z in logits]).double().cpu() * n
                ens_sum += float(ensemble_loss(logits, labels, w, kind=self.cfg.ensemble)) * n
                n_sum += n
        finally:
            for m, t in zip(self.models, was):
                m.train(t)
        if n_sum == 0:
            raise ValueError("dev batches hold no masked token to score")
        return {"dev_ce": (ce_sum / n_sum).tolist(), "dev_ensemble": ens_sum / n_sum}

    def outer_step(self, train_batch: dict, dev_batch: dict, lr: float, eta: float,
                   reuse_grad: bool = False) -> torch.Tensor | None:
        """No outer loop for fixed-weight methods."""
        return None

    def state_dict(self) -> dict:
        return {"weights": None if self.weights is None else self.weights.detach().cpu().clone()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("weights") is not None:
            w = state["weights"].to(self.weights.device, self.weights.dtype)
            validate_weights(w, "checkpoint weights")
            self.weights = w


class MLM(Method):
    """``mlm``: each model alone on the masked-LM cross-entropy (eq. 2 with a = 0 and one peer)."""


class TeacherKD(Method):
    """``kd`` (Hinton et al. 2015): each model alone learns from labels and a fixed teacher,

        L_i = (1 - a) CE(z_i, y) + a KL(p_T || p_i)  at temperature T,

    the shape of eq. 2 with the teacher in place of the peers. The teacher is the project's own ``mlm``
    model (``TrainConfig.teacher_dir``) and must share the peers' tokenizer."""

    name = "kd"
    uses_teacher = True

    def loss(self, batch):
        logits, labels = self._forward(batch)
        target = self._teacher_logits(batch)
        ce = torch.stack([masked_ce(z, labels) for z in logits])
        kl = torch.stack([masked_kl(target, z, labels, self.cfg.temperature) for z in logits])
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
        for m, exits, heads in zip(self.models, self.exits, self.heads):
            deep, labels, hidden = masked_logits(m, batch, output_hidden_states=bool(exits))
            ce = masked_ce(deep, labels)
            target = deep.detach() if self.cfg.detach_targets else deep
            kl = deep.new_zeros(())
            for k, head in zip(exits, heads):
                z = head(hidden[k])
                kl_k = masked_kl(target, z, labels, self.cfg.temperature, detach_target=self.cfg.detach_targets)
                total = total + (1 - self.alpha) * masked_ce(z, labels) + self.alpha * kl_k
                kl = kl + kl_k
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


class DML(Method):
    """``dml`` (deep mutual learning, Zhang et al. 2018): the inner loss of eq. 2 with fixed weights w
    (equal, 1/p, unless given), summed over the peers; no outer step."""

    name = "dml"

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

    def _inner(self, batch):
        logits, labels = self._forward(batch)
        il = inner_loss(logits, labels, self.weights, self.alpha, self.cfg.temperature, self.cfg.detach_targets)
        return il, logits, labels

    def loss(self, batch):
        il, _, _ = self._inner(batch)
        return il.total, {"ce": il.ce.detach(), "kl": il.kl.detach()}


class DWML(DML):
    """``dwml``: eq. 2 inner loss with weights w on the simplex, learned in an outer loop.

    Every ``weight_update_frequency`` inner steps the loop calls :meth:`outer_step` with a training
    micro-batch and a dev micro-batch (``train.outer_grad``: the step's own batch and gradient, or a fresh
    batch after the step): the hypergradient of the dev ensemble loss L2 with respect to w
    through one inner step of size gamma = the current learning rate (eq. 3, ``dwml.bilevel``), then one
    mirror-descent (exponentiated-gradient) step of size eta (eq. 4), which keeps w on the simplex."""

    name = "dwml"
    learns_weights = True

    def outer_step(self, train_batch, dev_batch, lr, eta, reuse_grad=False):
        from dwml.bilevel import hypergradient, mirror_descent_step

        # (hypergradient runs the peers in eval mode and restores them: see dwml.bilevel on dropout.)
        # reuse_grad: theta' from the .grad the loop's backward left (train.outer_grad='reuse').
        g = hypergradient(self.models, train_batch, dev_batch, self.weights, alpha=self.alpha, gamma=lr,
                          temperature=self.cfg.temperature, detach_targets=self.cfg.detach_targets,
                          ensemble=self.cfg.ensemble, mode=self.cfg.hypergrad_mode, reuse_grad=reuse_grad)
        if not torch.isfinite(g).all():
            raise FloatingPointError(f"non-finite hypergradient {g.tolist()} (peer(s) "
                                     f"{torch.nonzero(~torch.isfinite(g)).flatten().tolist()})")
        w = mirror_descent_step(self.weights, g.to(self.weights.device), eta)
        validate_weights(w, "weights after the mirror-descent step")
        self.weights = w.detach()
        return g.detach()


class KDDWML(DWML):
    """``kd_dwml``: DWML with the teacher as one more, fixed, target in every peer's loss:

        loss = eq. 2 + a * w_T * sum_i KL(p_T || p_i),  w_T = 1/p,

    so the teacher weighs as much as one peer at equal weights. The teacher term does not depend on w,
    so the hypergradient of eq. 3 (a mixed derivative in theta and w) is unchanged by it and DWML's outer
    step serves as is."""

    name = "kd_dwml"
    uses_teacher = True

    def loss(self, batch):
        il, logits, labels = self._inner(batch)
        target = self._teacher_logits(batch)
        kl_t = torch.stack([masked_kl(target, z, labels, self.cfg.temperature) for z in logits])
        total = il.total + self.alpha * kl_t.sum() / self.p
        return total, {"ce": il.ce.detach(), "kl": il.kl.detach(), "kl_teacher": kl_t.detach()}


CLASSES = {"mlm": MLM, "sd": SelfDistillation, "kd": TeacherKD, "dml": DML, "dwml": DWML, "kd_dwml": KDDWML}


def make_method(cfg: TrainConfig, models: Sequence[nn.Module], teacher: nn.Module | None = None, **kwargs) -> Method:
    """The strategy named by ``cfg.method`` over ``models`` (keyword arguments go to its constructor)."""
    if cfg.method not in CLASSES:
        raise ConfigError(f"train.method={cfg.method!r}: must be one of {', '.join(METHODS)}")
    return CLASSES[cfg.method](models, cfg, teacher, **kwargs)
