"""The peers: stock ``RobertaForMaskedLM`` models, built from a searched shape, and the one forward pass
that every method, the outer step and the evaluator share.

A masked LM predicts only the selected positions (15-30% of them), so the forward pass here runs the
encoder on the whole batch and the LM head on the predicted rows alone: at the peers' small widths the
head (hidden x vocab) costs more than a transformer layer. Which rows, and how a batch is laid out, the
batch says itself (``dwml.batches`` builds it on the host, so nothing here needs to ask the device):

* ``input_ids`` [R, W] and ``pred_index`` [n], the flat indices ``row * W + col`` of the predicted
  positions (``targets`` [n] holds their labels; ``labels`` [R, W] is kept for callers that want it);
* either ``attention_mask`` [R, W] (one sequence a row, padded: 'blocks' and 'lines'), or
  ``segment_ids`` and ``positions`` [R, W] ('packed': several whole utterances a row; a token attends
  only to tokens of its own segment, and ``positions`` counts from 0 at each utterance's ``<s>``, so
  each utterance is computed as if it stood alone in its own row). A padded tail has segment 0.

The packed layout is handed to the unmodified Hugging Face model as a 4-D attention mask (transformers
returns a 4-D mask as it is, ``masking_utils``) and explicit ``position_ids``; no model code is forked.

Attention runs through :data:`ATTENTION`, PyTorch's ``scaled_dot_product_attention`` as transformers'
own "sdpa" calls it, except that on the CPU reduced-precision inputs are computed in float32: the CPU's
bf16 attention kernels were several times slower than float32 at the peers' head sizes
(``benchmarks/results/attention.md``), and attention is a small share of the arithmetic here. Peers are
switched to it for training by :func:`use_fast_attention` and back to "sdpa" before they are saved, so
a saved peer loads with ``AutoModelForMaskedLM.from_pretrained`` like any other.
"""
from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import Tensor, nn

from dwml.losses import IGNORE_INDEX

SPECIAL_IDS = {"bos_token_id": 0, "pad_token_id": 1, "eos_token_id": 2}
"""``dwml.tokenizer.SPECIAL_TOKENS`` order: <s>, <pad>, </s>, <unk>, <mask>."""
ATTENTION = "dwml_sdpa"
"""The attention implementation peers train with (registered with transformers on import)."""


# --------------------------------------------------------------------------------------------------
# Building peers
# --------------------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=1)
def _proc_cpuinfo() -> str:
    """``/proc/cpuinfo`` read once per process (every Trainer with 'auto' asks); '' where it does not exist."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """Whether this CPU has bf16 matrix instructions (AVX512-BF16 or AMX-BF16), read from the flags of
    ``/proc/cpuinfo`` (or the text given); False where that file does not exist."""
    if cpuinfo is None:
        cpuinfo = _proc_cpuinfo()
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[-1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def use_bf16(setting: bool | str, device: torch.device | str) -> bool:
    """``train.mixed_precision`` resolved for ``device``: True/False as given; 'auto' is True where bf16
    is native (a CUDA device that supports it, a CPU with bf16 instructions), False elsewhere."""
    if setting in (True, False):
        return bool(setting)
    if setting != "auto":
        raise ValueError(f"train.mixed_precision={setting!r}: must be true, false or 'auto'")
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and cpu_has_native_bf16()


def roberta_config(num_layers: int, num_heads: int, hidden_size: int, intermediate_size: int, vocab_size: int,
                   max_position_embeddings: int = 514, **overrides):
    """A ``RobertaConfig`` of this shape, with ``dwml.tokenizer``'s special-token ids and tied embeddings."""
    from transformers import RobertaConfig

    kwargs = dict(vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_layers,
                  num_attention_heads=num_heads, intermediate_size=intermediate_size,
                  max_position_embeddings=max_position_embeddings, type_vocab_size=1,
                  tie_word_embeddings=True, **SPECIAL_IDS)
    kwargs.update(overrides)
    return RobertaConfig(**kwargs)


def build_peer(arch, vocab_size: int, max_position_embeddings: int = 514, **config_overrides):
    """A freshly initialised ``RobertaForMaskedLM`` of ``arch``'s shape (a ``dwml.search.PeerArch``, or
    anything with ``num_layers``, ``num_heads``, ``hidden_size``, ``intermediate_size``); seed torch first.

    ``max_position_embeddings`` is the block size + 2 (RoBERTa's positions start after the padding id)."""
    from transformers import RobertaForMaskedLM

    return RobertaForMaskedLM(roberta_config(arch.num_layers, arch.num_heads, arch.hidden_size,
                                             arch.intermediate_size, vocab_size, max_position_embeddings,
                                             **config_overrides))


def build_peers(peers: Sequence, meta: dict, **config_overrides) -> list:
    """Every peer of a saved search, at the vocabulary and positions the search counted with."""
    return [build_peer(a, meta["vocab_size"], meta["max_position_embeddings"], **config_overrides) for a in peers]


# --------------------------------------------------------------------------------------------------
# Attention
# --------------------------------------------------------------------------------------------------

def _attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.device.type == "cpu" and query.dtype in (torch.bfloat16, torch.float16):
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), attention_mask,
                                              dropout=dropout, scaling=scaling, **kwargs)
        return out.to(query.dtype), weights
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, _attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # 2-D padding masks: built as for "sdpa"


_register()


def quiet_library_bars() -> None:
    """Switch off transformers' own progress bars for this process ("Loading weights" on every
    ``from_pretrained``, "Writing model shards" on every ``save_pretrained``): a study loads and saves peers
    hundreds of times, and the project prints its own progress instead (one line per run or stage)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


quiet_library_bars()  # on import: everything that trains, saves or scores peers imports this module


def use_fast_attention(models: Sequence[nn.Module]) -> list[str | None]:
    """Switch the models that use "sdpa" to :data:`ATTENTION`; return what each used, for
    :func:`restore_attention` (others, e.g. "eager", are left as they are)."""
    before = []
    for m in models:
        impl = getattr(getattr(m, "config", None), "_attn_implementation", None)
        before.append(impl)
        if impl == "sdpa" and hasattr(m, "set_attn_implementation"):
            m.set_attn_implementation(ATTENTION)
    return before


def restore_attention(models: Sequence[nn.Module], before: Sequence[str | None]) -> None:
    """Undo :func:`use_fast_attention` (before saving a model, or handing it back to the caller)."""
    for m, impl in zip(models, before):
        if impl is not None and getattr(m.config, "_attn_implementation", None) != impl:
            m.set_attn_implementation(impl)


# --------------------------------------------------------------------------------------------------
# The forward pass at the predicted positions
# --------------------------------------------------------------------------------------------------

def block_mask(segment_ids: Tensor) -> Tensor:
    """[R, 1, W, W] boolean: query t may attend to key s iff they lie in the same segment. A padded tail
    (segment 0) attends to itself only, so no query row is empty (an all-masked row would give NaN)."""
    return (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])


def _eager_mask(model: nn.Module, mask: Tensor) -> Tensor:
    """A boolean 4-D mask as the model's attention wants it: as it is, or additive for eager attention."""
    if getattr(model.config, "_attn_implementation", "sdpa") == "eager":  # eager adds the mask to the scores
        dtype = next(model.parameters()).dtype
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(~mask, torch.finfo(dtype).min)
    return mask


def encoder_inputs(model: nn.Module, batch: dict) -> dict:
    """The keyword arguments of the encoder for ``batch`` in either layout (see the module docstring)."""
    if "segment_ids" not in batch:
        ids, mask = batch["input_ids"], batch["attention_mask"]
        if "n_real" not in batch:  # built elsewhere: transformers reads the mask (and asks the device if it is full)
            return {"input_ids": ids, "attention_mask": mask}
        # The batch counted its real tokens on the host: no padding means no mask (and no read-back of
        # mask.all() in transformers; flash attention stays possible); padding, a ready 4-D key mask.
        if batch["n_real"] == ids.numel():
            return {"input_ids": ids, "attention_mask": None}
        keys = mask.bool()[:, None, None, :].expand(ids.shape[0], 1, ids.shape[1], ids.shape[1])
        return {"input_ids": ids, "attention_mask": _eager_mask(model, keys)}
    cfg = model.config
    mask = _eager_mask(model, block_mask(batch["segment_ids"]))
    pos = batch["positions"]
    if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "roberta-prelayernorm"):
        # RoBERTa numbers a sequence's tokens from pad_token_id + 1 and gives padding pad_token_id itself
        # (``create_position_ids_from_input_ids``): the same numbers, utterance by utterance.
        pad = cfg.pad_token_id
        position_ids = torch.where(pos >= 0, pos + pad + 1, torch.full_like(pos, pad))
    else:
        position_ids = pos.clamp_min(0)
    return {"input_ids": batch["input_ids"], "attention_mask": mask, "position_ids": position_ids}


def prediction_index(batch: dict) -> Tensor:
    """``batch['pred_index']``, or (for a batch built elsewhere) the flat positions whose label is set.
    The second path asks the device for the count (``nonzero``): the training loop never takes it."""
    if "pred_index" in batch:
        return batch["pred_index"]
    return torch.nonzero(batch["labels"].reshape(-1) != IGNORE_INDEX).flatten()


def prediction_targets(batch: dict) -> Tensor:
    """The labels at :func:`prediction_index`, in the same order."""
    if "targets" in batch:
        return batch["targets"]
    return batch["labels"].reshape(-1).index_select(0, prediction_index(batch))


def predicted_logits(model: nn.Module, batch: dict, output_hidden_states: bool = False
                     ) -> tuple[Tensor, tuple[Tensor, ...] | None]:
    """The model's logits at the predicted positions only, ``[n, V]``, and (if asked) every layer's hidden
    states at those positions (embeddings first), or None.

    For a RoBERTa-style model (``.roberta`` encoder and ``.lm_head``) the encoder runs on the whole batch
    and the head on the n selected rows; any other masked LM falls back to its full forward pass (right,
    only slower)."""
    idx = prediction_index(batch)
    encoder, head = getattr(model, "roberta", None), getattr(model, "lm_head", None)
    if encoder is None or head is None:
        out = model(**encoder_inputs(model, batch), output_hidden_states=output_hidden_states)
        logits = out.logits.reshape(-1, out.logits.shape[-1]).index_select(0, idx)
        return logits, _gather_hidden(out.hidden_states, idx) if output_hidden_states else None
    out = encoder(**encoder_inputs(model, batch), output_hidden_states=output_hidden_states)
    h = out.last_hidden_state
    logits = head(h.reshape(-1, h.shape[-1]).index_select(0, idx))
    return logits, _gather_hidden(out.hidden_states, idx) if output_hidden_states else None


def _gather_hidden(hidden: Sequence[Tensor], idx: Tensor) -> tuple[Tensor, ...]:
    return tuple(h.reshape(-1, h.shape[-1]).index_select(0, idx) for h in hidden)


def logits_at(model: nn.Module, input_ids: Tensor, attention_mask: Tensor, positions: Tensor) -> Tensor:
    """Logits of row r at column ``positions[r]`` (one masked position a row: the PLL scorer's case)."""
    width = input_ids.shape[1]
    idx = torch.arange(len(positions), device=input_ids.device) * width + positions
    return predicted_logits(model, {"input_ids": input_ids, "attention_mask": attention_mask, "pred_index": idx})[0]
