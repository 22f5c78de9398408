"""Zero-shot minimal-pair evaluation as the BabyLM 2024 pipeline does it: pseudo-log-likelihood scoring.

A masked LM has no left-to-right probability of a sentence, so BabyLM scores it with the
pseudo-log-likelihood of Salazar et al. (2020, eq. 2 there, "PLL-original"):

    PLL(W) = sum_{t in scored} log P(w_t | W without w_t)

where each scored token w_t is replaced by ``<mask>`` in its own copy of the sentence (one forward pass
per token) and the log-probability of the true token at that position is read off. ``reduction="mean"``
divides by the number of scored tokens. A minimal pair is right when the good sentence has the strictly
higher score; a tie is *not* right (the published fork broke ties at random, which lifts a constant
model to 50%), and :func:`score_pairs` records ties so the reports can give the tie rate.

What makes :func:`pll_scores` fast, each change exact:
- only the masked position of each copy needs the vocabulary projection, so we run the encoder, gather
  that one hidden row per copy and apply the LM head to those rows alone (the head over all positions
  is a third of the work of a small peer with an 8k vocabulary);
- all copies of all sentences are sorted by length and packed into batches, so almost every batch has
  a single length and carries no padding at all;
- identical (context, sentence) items are scored once (BLiMP repeats sentences across pairs).

Scoring conventions (:data:`CONVENTIONS`; :func:`score_pairs` ``convention=`` / ``ties=`` / ``reduction=``):
the BabyLM pipelines count a tie as right (the good sentence is candidate 0 and their argmax returns the
first maximum), the 2024 ``hf-mlm`` path (minicons' ``conditional_score``) scores ``'</s>' + '  ' +
sentence`` (the empty context replaced by the end token, then minicons' separator and lm-eval's target
delimiter) with the *mean* of the scored tokens, a lone-space token included; the 2025 pipeline
(``sentence_zero_shot``, backend ``mlm``) scores the sentence as the tokenizer encodes it with the *sum*,
and for EWoK ``Context1 + ' ' + Target`` encoded in one go, scoring the tokens that overlap the target's
characters. ``pll_metric='within_word_l2r'`` is the PLL of Kauf & Ivanova (2023): the tokens to the right
of the scored one *within its word* are masked too (minicons' ``PLL_metric='within_word_l2r'``).

The suites' loaders (BLiMP, the BLiMP supplement, EWoK read from its password-protected zip, Zorro, the
synthetic corpus's pairs) live in :mod:`dwml.suites`, one module each; :func:`load_suites` reads them by name.
"""
from __future__ import annotations

import contextlib
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dwml.config import EvalConfig
from dwml.io import project_root
from dwml.suites import EvalDataError, MinimalPair


# --------------------------------------------------------------------------------------------------
# Where the real data is
# --------------------------------------------------------------------------------------------------

def data_root() -> Path | None:
    """``$DWML_DATA`` if set, else ``<project root>/../shared/data``; None when that folder is absent."""
    env = os.environ.get("DWML_DATA")
    path = Path(env).expanduser() if env else project_root().parent / "shared" / "data"
    return path if path.is_dir() else None


# --------------------------------------------------------------------------------------------------
# The suites by name
# --------------------------------------------------------------------------------------------------



def load_suites(root: str | Path | None = None, names: Sequence[str] = ("blimp", "supplement", "ewok")) -> dict[str, list[MinimalPair]]:
    """The named suites (any of ``dwml.suites.names()``) from their folders under the data root
    (``data_root()`` by default); an absent root or an unknown name raises."""
    from dwml import suites

    root = Path(root) if root is not None else data_root()
    if root is None:
        raise EvalDataError("no data folder: set DWML_DATA or place the BabyLM data at ../shared/data")
    unknown = [n for n in names if n not in suites.SUITES]
    if unknown:
        raise EvalDataError(f"unknown suite(s) {sorted(unknown)}; known: {suites.names()}")
    return {name: suites.load(name, suites.get(name).path(root)) for name in names}


def subsample(pairs: Sequence[MinimalPair], max_per_task: int, seed: int = 0) -> list[MinimalPair]:
    """At most ``max_per_task`` pairs of each task, drawn with a fixed seed (0 keeps all); order kept."""
    if max_per_task <= 0:
        return list(pairs)
    by_task: dict[str, list[int]] = {}
    for i, p in enumerate(pairs):
        by_task.setdefault(p.task, []).append(i)
    rng = random.Random(seed)
    keep = set()
    for idx in by_task.values():
        keep.update(idx if len(idx) <= max_per_task else rng.sample(idx, max_per_task))
    return [p for i, p in enumerate(pairs) if i in keep]


# --------------------------------------------------------------------------------------------------
# Pseudo-log-likelihood
# --------------------------------------------------------------------------------------------------

def max_tokens(model) -> int:
    """Longest input the model's position table allows. RoBERTa numbers positions from pad_id + 1 (the
    slots below are the padding position), so 514 position embeddings allow 512 tokens."""
    cfg = model.config
    n = cfg.max_position_embeddings
    if getattr(cfg, "model_type", "") in ("roberta", "xlm-roberta", "camembert", "roberta-prelayernorm"):
        n -= cfg.pad_token_id + 1
    return n


def encode_for_pll(tokenizer, sentences: Sequence[str], prefixes: Sequence[str | None] | None = None
                   ) -> list[tuple[list[int], int, int]]:
    """``(ids, start, end)`` per sentence: the ids with the tokenizer's special tokens, and the half-open
    span of positions to score. With a prefix the ids are ``<s> prefix sentence </s>`` and only the
    sentence's tokens are scored; the prefix is encoded on its own so its tokens never change with the
    continuation (byte-level BPE with a prefix space splits at the space between them anyway)."""
    if prefixes is not None and len(prefixes) != len(sentences):
        raise ValueError(f"prefixes has {len(prefixes)} items but sentences has {len(sentences)}")
    # split_special_tokens: '</s>' or '<mask>' in a sentence is text, scored as such, never an end or mask token
    enc = tokenizer(list(sentences), add_special_tokens=True, return_special_tokens_mask=True, split_special_tokens=True)
    out = []
    for i, (ids, special) in enumerate(zip(enc["input_ids"], enc["special_tokens_mask"])):
        lead = 0
        while lead < len(ids) and special[lead]:
            lead += 1
        end = lead
        while end < len(ids) and not special[end]:
            end += 1
        if end == lead:
            raise ValueError(f"sentence {i} ({sentences[i]!r}) has no tokens to score")
        prefix = prefixes[i] if prefixes is not None else None
        if prefix:
            p = tokenizer(prefix, add_special_tokens=False, split_special_tokens=True)["input_ids"]
            ids = ids[:lead] + p + ids[lead:]
            lead, end = lead + len(p), end + len(p)
        out.append((list(ids), lead, end))
    return out


@dataclass(frozen=True)
class Convention:
    """How a minimal pair is scored and decided: ``ties`` ('wrong' or 'correct'), ``reduction`` ('sum' or
    'mean' of the scored tokens' log-probabilities) and ``prefixing`` (how the text is laid out and which
    tokens are scored: 'dwml', 'babylm2024', 'babylm2025'; see :func:`encode_scored`)."""

    name: str
    ties: str
    reduction: str
    prefixing: str


CONVENTIONS = {
    "dwml": Convention("dwml", ties="wrong", reduction="sum", prefixing="dwml"),
    "babylm2024": Convention("babylm2024", ties="correct", reduction="mean", prefixing="babylm2024"),
    "babylm2025": Convention("babylm2025", ties="correct", reduction="sum", prefixing="babylm2025"),
}
PREFIXINGS = ("dwml", "babylm2024", "babylm2025")
PLL_METRICS = ("original", "within_word_l2r")


def resolve_convention(convention: str | None = None, ties: str | None = None, reduction: str | None = None,
                       prefixing: str | None = None, default_reduction: str = "sum") -> Convention:
    """A preset (default 'dwml', whose reduction is ``default_reduction``: the profile's ``eval.reduction``)
    with any of ``ties`` / ``reduction`` / ``prefixing`` given explicitly overriding it. The name says
    what was overridden, e.g. ``babylm2024+ties=wrong``, so a table never claims a preset it did not use."""
    if convention is None:
        base = Convention("dwml", "wrong", default_reduction, "dwml")
    elif convention in CONVENTIONS:
        base = CONVENTIONS[convention]
    else:
        raise ValueError(f"convention={convention!r}: must be one of {sorted(CONVENTIONS)}")
    for key, value, allowed in (("ties", ties, ("wrong", "correct")), ("reduction", reduction, ("sum", "mean")),
                                ("prefixing", prefixing, PREFIXINGS)):
        if value is not None and value not in allowed:
            raise ValueError(f"{key}={value!r}: must be one of {list(allowed)}")
    changed = [f"{k}={v}" for k, v in (("ties", ties), ("reduction", reduction), ("prefixing", prefixing))
               if v is not None and v != getattr(base, k)]
    return Convention("+".join([base.name] + changed), ties or base.ties, reduction or base.reduction,
                      prefixing or base.prefixing)


def _word_ends(word_ids: Sequence[int | None], positions: Sequence[int]) -> np.ndarray:
    """For each scored position p, the end (exclusive) of the run of scored positions from p that share
    p's word: what within_word_l2r masks. A position without a word (None) masks itself only."""
    scored = set(int(p) for p in positions)
    last = max(scored)
    ends = []
    for p in positions:
        p = int(p)
        end = p + 1
        if word_ids[p] is not None:
            while end <= last and end in scored and word_ids[end] == word_ids[p]:
                end += 1
        ends.append(end)
    return np.array(ends, dtype=np.int64)


def encode_scored(tokenizer, sentences: Sequence[str], prefixes: Sequence[str | None] | None = None,
                  prefixing: str = "dwml", pll_metric: str = "original"
                  ) -> list[tuple[list[int], np.ndarray, np.ndarray]]:
    """``(ids, positions, mask_ends)`` per sentence under a prefixing convention: the input ids, the
    positions whose tokens are scored, and for each the end of the span masked with it (``position + 1``
    for the original PLL; the end of the token's word within the scored tokens for ``within_word_l2r``).

    - ``'dwml'``: :func:`encode_for_pll` (``<s> [prefix] sentence </s>``, the prefix encoded on its own).
    - ``'babylm2024'`` (minicons ``conditional_score(context, ' ' + sentence)`` as the 2024 ``hf-mlm`` path
      calls it): the text ``context + '  ' + sentence`` with the tokenizer's special tokens, the context
      being the end token (``'</s>'``) when there is none (written as the pipeline writes it,
      ``f"{tokenizer.eos_token}"``: the text ``'None'`` for a tokenizer without one, e.g. BERT's); scored are the tokens from position n on, n the
      number of non-pad, non-separator tokens of the context encoded alone, that are not pad / CLS / SEP.
    - ``'babylm2025'`` (``sentence_zero_shot``, backend ``mlm``): the text is the sentence, or ``prefix +
      ' ' + sentence``; scored are the tokens whose character span ends after the prefix (all real tokens
      without one; special tokens have an empty span). Needs a fast tokenizer (offsets)."""
    if prefixing not in PREFIXINGS:
        raise ValueError(f"prefixing={prefixing!r}: must be one of {list(PREFIXINGS)}")
    if pll_metric not in PLL_METRICS:
        raise ValueError(f"pll_metric={pll_metric!r}: must be one of {list(PLL_METRICS)}")
    if prefixes is not None and len(prefixes) != len(sentences):
        raise ValueError(f"prefixes has {len(prefixes)} items but sentences has {len(sentences)}")
    l2r = pll_metric == "within_word_l2r"
    pre = [prefixes[i] if prefixes is not None else None for i in range(len(sentences))]
    out = []
    if prefixing == "dwml":
        words = tokenizer(list(sentences), add_special_tokens=True, split_special_tokens=True) if l2r else None
        for i, (ids, start, end) in enumerate(encode_for_pll(tokenizer, sentences, prefixes)):
            positions = np.arange(start, end)
            if l2r:
                wid = words.word_ids(i)
                shift = len(ids) - len(wid)  # the prefix's tokens sit between <s> and the sentence
                lead = next(k for k, w in enumerate(wid) if w is not None)
                wid = wid[:lead] + [None] * shift + wid[lead:]
                ends = _word_ends(wid, positions)
            else:
                ends = positions + 1
            out.append((list(ids), positions, ends))
        return out
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"prefixing={prefixing!r} needs a fast tokenizer (character offsets, word ids); "
                         f"{type(tokenizer).__name__} is not one")
    special = {t for t in (tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id) if t is not None}
    if prefixing == "babylm2024":
        contexts = [p if p else f"{tokenizer.eos_token}" for p in pre]  # 'None' without one, as the pipeline
        texts = [c + " " + " " + s for c, s in zip(contexts, sentences)]
        ctx = tokenizer(contexts, add_special_tokens=True)["input_ids"]
        skip = {t for t in (tokenizer.pad_token_id, tokenizer.sep_token_id) if t is not None}
        starts = [sum(t not in skip for t in c) for c in ctx]
        enc = tokenizer(texts, add_special_tokens=True)
        for i, ids in enumerate(enc["input_ids"]):
            positions = np.array([k for k in range(starts[i], len(ids)) if ids[k] not in special], dtype=np.int64)
            out.append((list(ids), positions, positions))
    else:  # babylm2025
        texts = [(p + " " + s) if p else s for p, s in zip(pre, sentences)]
        enc = tokenizer(texts, add_special_tokens=True, return_offsets_mapping=True)
        for i, (ids, offsets) in enumerate(zip(enc["input_ids"], enc["offset_mapping"])):
            start_char = len(pre[i]) if pre[i] else 0
            positions = np.array([k for k, (_, e) in enumerate(offsets) if e > start_char], dtype=np.int64)
            out.append((list(ids), positions, positions))
    for i, (ids, positions, _) in enumerate(out):
        if len(positions) == 0:
            raise ValueError(f"sentence {i} ({sentences[i]!r}) has no tokens to score")
    if l2r:
        out = [(ids, pos, _word_ends(enc.word_ids(i), pos)) for i, (ids, pos, _) in enumerate(out)]
    else:
        out = [(ids, pos, pos + 1) for ids, pos, _ in out]
    return out


def _precision_context(device: torch.device, dtype: str):
    if dtype == "float32":
        return contextlib.nullcontext()
    if dtype == "bfloat16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    raise ValueError(f"dtype={dtype!r}: must be 'float32' or 'bfloat16'")


def pll_scores(model, tokenizer, sentences: Sequence[str], prefixes: Sequence[str | None] | None = None,
               reduction: str = "sum", batch_size: int = 128, dtype: str = "float32",
               device: str | torch.device | None = None, progress: bool = True, prefixing: str = "dwml",
               pll_metric: str = "original", desc: str = "PLL", names: Sequence[str] | None = None) -> np.ndarray:
    """Pseudo-log-likelihood of each sentence (Salazar et al. 2020, eq. 2; "PLL-original").

    Each scored token is masked in its own copy; ``reduction='sum'`` adds the log-probabilities of the
    true tokens, ``'mean'`` divides by their number. With ``prefixes`` (EWoK's context) the prefix is
    visible in every copy and never masked or scored. Special tokens are never scored. ``batch_size`` is
    the number of masked copies per forward pass; ``dtype='bfloat16'`` runs the model under autocast
    (the log-softmax stays float32). ``prefixing`` lays out the text and picks the scored tokens as
    :func:`encode_scored` says (one of :data:`PREFIXINGS`); ``pll_metric='within_word_l2r'`` also masks
    the scored token's word to its right. The progress bar (``desc``) counts sentences.
    Returns float64 scores in the order of ``sentences``."""
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction={reduction!r}: must be 'sum' or 'mean'")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}: must be >= 1")
    if len(sentences) == 0:
        return np.zeros(0)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    limit = max_tokens(model)
    mask_id = tokenizer.mask_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if mask_id is None:
        raise ValueError("the tokenizer has no mask token; PLL needs one")
    from dwml.model import logits_at

    # Score each distinct (prefix, sentence) once.
    keys = [(prefixes[i] if prefixes is not None else None, s) for i, s in enumerate(sentences)]
    first: dict[tuple, int] = {}
    slot = np.array([first.setdefault(k, len(first)) for k in keys])
    uniq = list(first)
    encoded = encode_scored(tokenizer, [s for _, s in uniq], [p for p, _ in uniq] if prefixes is not None else None,
                            prefixing=prefixing, pll_metric=pll_metric)
    for u, (ids, _, _) in enumerate(encoded):
        if len(ids) > limit:
            i = int(np.flatnonzero(slot == u)[0])
            what = names[i] if names is not None else f"sentence {i}"  # the pair and side, where the caller knows them
            raise ValueError(f"{what} ({sentences[i][:80]!r}) is {len(ids)} tokens long with its special "
                             f"tokens{' and prefix' if prefixes is not None else ''}, more than the {limit} "
                             f"positions the model has (max_position_embeddings={model.config.max_position_embeddings})")

    lengths = np.array([len(ids) for ids, _, _ in encoded])
    table = np.full((len(encoded), lengths.max()), pad_id, dtype=np.int64)
    for u, (ids, _, _) in enumerate(encoded):
        table[u, :len(ids)] = ids
    # One masked copy per scored token: (sentence, position), sorted by length so batches are uniform.
    copy_sent = np.concatenate([np.full(len(pos), u) for u, (_, pos, _) in enumerate(encoded)])
    copy_pos = np.concatenate([pos for _, pos, _ in encoded])
    copy_end = np.concatenate([ends for _, _, ends in encoded])  # masked span [pos, end): pos + 1 unless l2r
    # Longest first: the progress bar's first rates are the slowest, so its estimate of the time left errs
    # long, never short (ascending, a BLiMP run showed 2 min left at 13% of an 8-minute run).
    order = np.argsort(-lengths[copy_sent], kind="stable")
    copy_sent, copy_pos, copy_end = copy_sent[order], copy_pos[order], copy_end[order]
    multi = bool((copy_end > copy_pos + 1).any())
    # The copies of a sentence stay together (a stable sort on its length), so a sentence is done at its
    # last copy: the bar counts those.
    last_copy = np.r_[copy_sent[1:] != copy_sent[:-1], True]

    table_t = torch.from_numpy(table)
    totals = np.zeros(len(encoded))
    counts = np.array([len(pos) for _, pos, _ in encoded], dtype=np.float64)
    was_training = model.training
    model.eval()
    from tqdm.auto import tqdm

    try:
        with torch.inference_mode(), _precision_context(device, dtype), \
                tqdm(total=len(encoded), desc=desc, unit="sentence", disable=not progress, leave=False) as bar:
            for lo in range(0, len(copy_sent), batch_size):
                sent = torch.from_numpy(copy_sent[lo:lo + batch_size])
                pos = torch.from_numpy(copy_pos[lo:lo + batch_size])
                lens = torch.from_numpy(lengths[copy_sent[lo:lo + batch_size]])
                width = int(lens.max())
                ids = table_t[sent, :width].clone()
                rows = torch.arange(len(pos))
                target = ids[rows, pos].clone()
                ids[rows, pos] = mask_id
                if multi:  # within_word_l2r: the rest of the word, to the right, is masked as well
                    cols = torch.arange(width)[None, :]
                    end = torch.from_numpy(copy_end[lo:lo + batch_size])
                    ids[(cols >= pos[:, None]) & (cols < end[:, None])] = mask_id
                # A uniform-length batch needs no mask; padding is right-aligned, so RoBERTa's position
                # ids of the real tokens are the same as without padding.
                attn = None if int(lens.min()) == width else (torch.arange(width)[None, :] < lens[:, None]).long()
                # the LM head at the masked position only: the forward pass training uses (dwml.model)
                logits = logits_at(model, ids.to(device), None if attn is None else attn.to(device), pos.to(device))
                # Half-precision logits are widened first; a float64 model keeps float64 throughout.
                logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)
                picked = logp[rows.to(device), target.to(device)].double().cpu().numpy()
                np.add.at(totals, copy_sent[lo:lo + batch_size], picked)
                bar.update(int(last_copy[lo:lo + batch_size].sum()))
    finally:
        model.train(was_training)
    scores = totals / counts if reduction == "mean" else totals
    return scores[slot]


# --------------------------------------------------------------------------------------------------
# Scoring pairs
# --------------------------------------------------------------------------------------------------

def load_masked_lm(model_dir: str | Path, attn_implementation: str | None = "sdpa"):
    """``(model, tokenizer)`` of any saved Hugging Face masked LM (``AutoModelForMaskedLM``: RoBERTa, BERT,
    DeBERTa-v2, ...), read from the folder only. Errors name the folder: missing, no ``config.json``, a
    model type with no masked-LM head, a tokenizer that cannot be read or has no mask token."""
    from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    from dwml.model import quiet_library_bars

    quiet_library_bars()  # no "Loading weights" bar per model loaded

    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise EvalDataError(f"model folder {model_dir} does not exist")
    if not (model_dir / "config.json").is_file():
        raise EvalDataError(f"{model_dir} holds no config.json: not a saved Hugging Face model folder")
    try:
        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise EvalDataError(f"{model_dir}/config.json cannot be read as a Hugging Face config: {e}") from None
    if config.model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES:
        raise EvalDataError(f"{model_dir} is a {config.model_type!r} model ({', '.join(config.architectures or [])}), "
                            f"not a masked LM: AutoModelForMaskedLM has no class for it")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
    except (OSError, ValueError, TypeError) as e:
        raise EvalDataError(f"{model_dir}: cannot load its tokenizer ({type(e).__name__}: {e})") from None
    if tokenizer.mask_token_id is None:
        raise EvalDataError(f"{model_dir}: the tokenizer ({type(tokenizer).__name__}) has no mask token; "
                            f"PLL scoring masks each token in turn and needs one")
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    try:
        try:
            model = AutoModelForMaskedLM.from_pretrained(str(model_dir), local_files_only=True, **kwargs)
        except ValueError:  # an architecture without that attention implementation: its default
            model = AutoModelForMaskedLM.from_pretrained(str(model_dir), local_files_only=True)
    except Exception as e:  # a truncated model.safetensors, a missing weights file, shapes the config does not fit
        weights = sorted(p.name for p in model_dir.glob("*.safetensors")) + sorted(p.name for p in model_dir.glob("*.bin"))
        first = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise EvalDataError(f"{model_dir}: no readable weights ({', '.join(weights) or 'no weights file'}: "
                            f"{type(e).__name__}: {first}); the file is truncated or corrupt, save the model again") from None
    n_embed = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embed:
        raise EvalDataError(f"{model_dir}: the tokenizer has {len(tokenizer)} ids but the model's embeddings only "
                            f"{n_embed} (config.json vocab_size {model.config.vocab_size}): ids from "
                            f"{n_embed} on have no embedding; the tokenizer is not this model's")
    return model.eval(), tokenizer


def score_pairs(model, tokenizer, pairs: Sequence[MinimalPair], cfg: EvalConfig | None = None,
                device: str | torch.device | None = None, progress: bool = True, convention: str | None = None,
                ties: str | None = None, reduction: str | None = None, prefixing: str | None = None,
                pll_metric: str = "original", desc: str = "PLL"):
    """One row per pair: suite, task, phenomenon, field, pair_id, score_good, score_bad, correct, tie.

    By default (convention 'dwml', reduction ``cfg.reduction``) ``correct`` is ``score_good > score_bad``
    strictly: a tie counts as wrong and is flagged in ``tie``. ``convention`` picks a preset of
    :data:`CONVENTIONS` ('babylm2024', 'babylm2025': a tie is right, as their argmax takes the good
    sentence, candidate 0); ``ties`` / ``reduction`` / ``prefixing`` override single settings (see
    :func:`resolve_convention`). The :class:`Convention` used is in ``df.attrs['convention']``."""
    import pandas as pd

    cfg = cfg or EvalConfig()
    conv = resolve_convention(convention, ties, reduction, prefixing, default_reduction=cfg.reduction)
    sentences = [p.good for p in pairs] + [p.bad for p in pairs]
    has_prefix = any(p.prefix for p in pairs)
    prefixes = [p.prefix for p in pairs] * 2 if has_prefix else None
    names = [f"{p.suite} task {p.task} pair_id {p.pair_id}, the {side} sentence" for side in ("good", "bad")
             for p in pairs]
    scores = pll_scores(model, tokenizer, sentences, prefixes, reduction=conv.reduction, batch_size=cfg.batch_size,
                        dtype=cfg.dtype, device=device, progress=progress, prefixing=conv.prefixing,
                        pll_metric=pll_metric, desc=desc, names=names)
    n = len(pairs)
    df = pd.DataFrame([asdict(p) for p in pairs]).drop(columns=["good", "bad", "prefix"]) if n else \
        pd.DataFrame(columns=["suite", "task", "pair_id", "phenomenon", "field"])
    df["score_good"], df["score_bad"] = scores[:n], scores[n:]
    df["tie"] = df["score_good"] == df["score_bad"]
    df["correct"] = (df["score_good"] > df["score_bad"]) | (df["tie"] & (conv.ties == "correct"))
    df = df[["suite", "task", "phenomenon", "field", "pair_id", "score_good", "score_bad", "correct", "tie"]]
    df.attrs["convention"] = asdict(conv)
    df.attrs["pll_metric"] = pll_metric
    return df


def evaluate_model(model_or_dir, tokenizer=None, suites: dict[str, Sequence[MinimalPair]] | None = None,
                   cfg: EvalConfig | None = None, device: str | torch.device | None = None, seed: int = 0,
                   progress: bool = True, **convention):
    """Per-pair results of a model (or a saved model folder, whose tokenizer is used) on each suite.

    ``suites`` maps a name to its pairs (default: BLiMP, supplement and EWoK from :func:`data_root`);
    ``cfg.max_pairs_per_paradigm > 0`` scores a seeded subsample of each task. All suites are scored in
    one :func:`pll_scores` call per suite (EWoK's prefixes make its copies longer). ``convention``:
    the keywords ``convention``, ``ties``, ``reduction``, ``prefixing``, ``pll_metric`` of :func:`score_pairs`."""
    import pandas as pd

    cfg = cfg or EvalConfig()
    if isinstance(model_or_dir, (str, Path)):
        model, saved_tok = load_masked_lm(model_or_dir)
        tokenizer = tokenizer or saved_tok
    else:
        model = model_or_dir
    if tokenizer is None:
        raise ValueError("tokenizer is required when a model object (not a folder) is given")
    suites = suites if suites is not None else load_suites()
    frames = []
    for name, pairs in suites.items():
        pairs = subsample(pairs, cfg.max_pairs_per_paradigm, seed)
        df = score_pairs(model, tokenizer, pairs, cfg, device=device, progress=progress, desc=f"PLL {name}",
                         **convention)
        df["suite"] = name
        frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
