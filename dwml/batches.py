"""Masked-LM batches from a token stream: BERT's masking, three packings (random blocks, one utterance a
row, several whole utterances a row), micro-batches merged into one chunk, and the predicted positions
computed on the host (``add_targets``) so the device is never asked for a count."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from dwml.corpus import DataError
from dwml.losses import IGNORE_INDEX
from dwml.tokenizer import BOS_ID, EOS_ID, MASK_ID, PAD_ID, SPECIAL_TOKENS

PACKINGS = ("blocks", "lines", "packed")


def mask_tokens(input_ids: torch.Tensor, vocab_size: int, generator: torch.Generator | None = None,
                mlm_probability: float = 0.15, mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                mask_id: int = MASK_ID, num_special: int = len(SPECIAL_TOKENS)) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking (Devlin et al. 2019, sec. 3.1): select ``mlm_probability`` of the ordinary tokens;
    of those, ``mask_replace_prob`` become ``<mask>``, ``random_replace_prob`` a random token, the rest
    stay. Special tokens (ids below ``num_special``) are never selected, and random replacements are
    drawn from ordinary tokens only (Hugging Face's collator may draw ``<s>`` or ``<pad>``; we do not).

    Returns ``(masked_ids, labels)`` with ``labels = -100`` at positions not selected.
    """
    if not 0.0 < mlm_probability < 1.0:
        raise DataError(f"mlm_probability={mlm_probability}: must be in (0, 1)")
    if mask_replace_prob < 0 or random_replace_prob < 0 or mask_replace_prob + random_replace_prob > 1:
        raise DataError(f"mask_replace_prob={mask_replace_prob}, random_replace_prob={random_replace_prob}: "
                        "must be >= 0 and sum to <= 1")
    ordinary = input_ids >= num_special
    selected = (torch.rand(input_ids.shape, generator=generator) < mlm_probability) & ordinary
    labels = torch.where(selected, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    action = torch.rand(input_ids.shape, generator=generator)
    to_mask = selected & (action < mask_replace_prob)
    to_random = selected & (action >= mask_replace_prob) & (action < mask_replace_prob + random_replace_prob)
    random_ids = torch.randint(num_special, vocab_size, input_ids.shape, generator=generator)
    masked = torch.where(to_mask, torch.full_like(input_ids, mask_id), input_ids)
    masked = torch.where(to_random, random_ids, masked)
    return masked, labels


def add_targets(batch: dict) -> dict:
    """``batch`` with what the forward pass and the loop need, computed here on the host (numpy), so that
    the device is never asked for a count: ``pred_index`` [n] (flat ``row * width + col`` of the predicted
    positions), ``targets`` [n] (their labels), ``token_weight`` [n] (1/n: a per-token mean) and the
    Python ints ``n_pred`` and ``n_real`` (tokens that are not padding)."""
    labels = batch["labels"].numpy().reshape(-1)
    idx = np.flatnonzero(labels != IGNORE_INDEX)
    n = int(idx.size)
    if "segment_ids" in batch:
        n_real = int(np.count_nonzero(batch["segment_ids"].numpy()))
    else:
        n_real = int(batch["attention_mask"].numpy().sum())
    return {**batch, "pred_index": torch.from_numpy(idx.astype(np.int64)), "targets": torch.from_numpy(labels[idx]),
            "token_weight": torch.full((n,), 1.0 / max(n, 1)), "n_pred": n, "n_real": n_real}


def pack_lines(batch: dict, width: int) -> dict:
    """A 'lines' batch (one padded utterance a row) repacked with several whole utterances a row of
    ``width`` positions ('packed'): first-fit decreasing by length, each utterance kept whole and in
    order, with ``segment_ids`` (1, 2, ... within a row; 0 for the padded tail), ``positions`` (0 at
    each utterance's ``<s>``; -1 in the tail) and ``source_rows`` (the row of ``batch`` each token came
    from; -1 in the tail). The same tokens, masks and labels: a model that lets a
    token attend only to its own segment, and numbers positions per segment (``dwml.model``), computes
    exactly what it computes on the 'lines' batch, on fewer padded positions."""
    mask = batch["attention_mask"].numpy().astype(bool)
    lengths = mask.sum(1)
    if lengths.size and lengths.max() > width:
        raise DataError(f"an utterance of {int(lengths.max())} tokens does not fit a packed row of {width} "
                        "(data.block_size)")
    rows: list[list[int]] = []
    room: list[int] = []
    for i in np.argsort(-lengths, kind="stable"):  # first fit, longest first: rows end ~95% full
        n = int(lengths[i])
        for r, free in enumerate(room):
            if free >= n:
                rows[r].append(int(i))
                room[r] -= n
                break
        else:
            rows.append([int(i)])
            room.append(width - n)
    ids_in, lab_in = batch["input_ids"].numpy(), batch["labels"].numpy()
    shape = (len(rows), width)
    ids = np.full(shape, PAD_ID, dtype=np.int64)
    labels = np.full(shape, IGNORE_INDEX, dtype=np.int64)
    seg = np.zeros(shape, dtype=np.int64)
    pos = np.full(shape, -1, dtype=np.int64)
    src = np.full(shape, -1, dtype=np.int64)
    for r, members in enumerate(rows):
        col = 0
        for k, i in enumerate(sorted(members)):  # in the order the batch drew them
            n = int(lengths[i])
            ids[r, col:col + n] = ids_in[i, :n]
            labels[r, col:col + n] = lab_in[i, :n]
            seg[r, col:col + n] = k + 1
            pos[r, col:col + n] = np.arange(n)
            src[r, col:col + n] = i
            col += n
    return add_targets({"input_ids": torch.from_numpy(ids), "labels": torch.from_numpy(labels),
                        "segment_ids": torch.from_numpy(seg), "positions": torch.from_numpy(pos),
                        "source_rows": torch.from_numpy(src)})


def merge_batches(batches: Sequence[dict]) -> dict:
    """Micro-batches as one chunk: rows stacked (padded on the right to the widest), ``pred_index`` moved
    to the new rows, and each token weighted 1/n_m of its own micro-batch m, so that a loss summed with
    ``token_weight`` over the chunk is the sum of the micro-batches' own per-token means: exactly what
    ``len(batches)`` separate passes accumulate (``train.chunk_size``)."""
    if len(batches) == 1:
        return batches[0]
    packed = "segment_ids" in batches[0]
    if any(("segment_ids" in b) != packed for b in batches):
        raise DataError("merge_batches: micro-batches of different packings")
    width = max(b["input_ids"].shape[1] for b in batches)

    def pad(t: torch.Tensor, value: int) -> torch.Tensor:
        return torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)

    keys = {"input_ids": PAD_ID, "labels": IGNORE_INDEX}
    keys.update({"segment_ids": 0, "positions": -1} if packed else {"attention_mask": 0})
    out = {k: torch.cat([pad(b[k], v) for b in batches]) for k, v in keys.items()}
    index, row0 = [], 0
    for b in batches:  # flat row * width + col, re-based on the merged rows and width
        w = b["input_ids"].shape[1]
        index.append((b["pred_index"] // w + row0) * width + b["pred_index"] % w)
        row0 += b["input_ids"].shape[0]
    out["pred_index"] = torch.cat(index)
    out["targets"] = torch.cat([b["targets"] for b in batches])
    out["token_weight"] = torch.cat([b["token_weight"] for b in batches])
    out["n_pred"] = sum(b["n_pred"] for b in batches)
    out["n_real"] = sum(b["n_real"] for b in batches)
    return out


class MLMBatcher:
    """Masked-LM batches from the token stream, in one of three packings:

    * ``'blocks'``: random contiguous blocks wrapped as ``<s> ... </s>``, each ``block_size - 2`` stream
      tokens (utterances separated by ``</s>``), so no padding is ever needed;
    * ``'lines'``: one utterance per sequence, ``<s> utterance </s>``, drawn uniformly, cut to
      ``block_size`` and right-padded with ``<pad>`` (attention mask 0) to the longest in the batch.
      With ``length_grouping = k > 1``, k batches' worth of utterances are drawn at once, sorted by
      length and served as k batches in random order (uniform random utterances padded to the longest
      of 64 were half padding on the synthetic corpus).
    * ``'packed'``: exactly the utterances, masks and labels of a 'lines' batch (the same draws from the
      same generator), repacked several whole utterances to a row of ``block_size`` (:func:`pack_lines`),
      so that a batch is ~95% real tokens instead of ~50%, and a run trains as its 'lines' twin would.

    Every batch carries its predicted positions, computed on the host (:func:`add_targets`).
    The generator's state and the batches drawn but not yet served are all the state there is:
    ``state_dict`` / ``load_state_dict`` make a resumed run draw exactly the batches it would have drawn.

    ``shard=(rank, world)``: rank ``rank``'s part of a run on ``world`` processes (``dwml.distributed``):
    the global batch of ``world * batch_size`` rows is drawn and masked as one process would draw it, and
    this rank keeps its ``batch_size`` rows (before 'packed' repacks them), each predicted token weighted
    1/n with n the global batch's count, so the ranks' weighted sums add up to the global per-token mean.
    """

    def __init__(self, tokens: np.ndarray, tokenizer=None, block_size: int = 512, batch_size: int = 3,
                 mlm_probability: float = 0.15, mask_replace_prob: float = 0.8, random_replace_prob: float = 0.1,
                 seed: int = 0, vocab_size: int | None = None, packing: str = "blocks", length_grouping: int = 1,
                 shard: tuple[int, int] = (0, 1)):
        rank, world = int(shard[0]), int(shard[1])
        if not 0 <= rank < world:
            raise DataError(f"shard={shard!r}: must be (rank, world) with 0 <= rank < world")
        self.rank, self.world = rank, world
        batch_size = batch_size * world  # the global batch; next_batch keeps this rank's rows
        if packing not in PACKINGS:
            raise DataError(f"packing={packing!r}: must be one of {', '.join(PACKINGS)} (data.packing)")
        if length_grouping < 1:
            raise DataError(f"length_grouping={length_grouping}: must be >= 1 (data.length_grouping)")
        self.packing, self.length_grouping = packing, int(length_grouping)
        self._pending: list[np.ndarray] = []  # picks of batches drawn but not yet served (length grouping)
        if block_size < 3:
            raise DataError(f"block_size={block_size}: must be >= 3 (<s>, one token, </s>)")
        if batch_size < 1:
            raise DataError(f"batch_size={batch_size}: must be >= 1")
        self.body = block_size - 2
        if len(tokens) < self.body:
            raise DataError(f"block_size={block_size} is larger than the corpus ({len(tokens)} tokens): "
                            f"lower block_size or use a larger corpus")
        if vocab_size is None:
            if tokenizer is None:
                raise DataError("MLMBatcher needs a tokenizer or vocab_size")
            vocab_size = len(tokenizer)
        self.tokens, self.vocab_size = tokens, int(vocab_size)
        self.block_size, self.batch_size = block_size, batch_size
        self.probs = dict(mlm_probability=mlm_probability, mask_replace_prob=mask_replace_prob,
                          random_replace_prob=random_replace_prob)
        self.generator = torch.Generator().manual_seed(seed)
        if packing in ("lines", "packed"):
            # Utterance i spans tokens[starts[i]:ends[i]] (its </s> excluded): the stream is
            # utterance </s> utterance </s> ..., so an utterance starts after each </s>.
            ends = np.flatnonzero(np.asarray(tokens) == EOS_ID)
            starts = np.concatenate([[0], ends[:-1] + 1])
            keep = ends > starts  # no empty utterances
            self.line_starts, self.line_ends = starts[keep], ends[keep]
            if len(self.line_starts) == 0:
                raise DataError("packing='lines' found no utterance (no </s> in the token stream)")

    def batches_per_pass(self) -> int:
        """Batches that draw as many utterances ('lines', 'packed') or stream tokens ('blocks') as the corpus
        holds: one pass in expectation (batches draw with replacement). At least 1."""
        if self.packing in ("lines", "packed"):
            return max(1, round(len(self.line_starts) / self.batch_size))
        return max(1, round(len(self.tokens) / (self.batch_size * self.body)))

    def _draw_lines(self) -> np.ndarray:
        """The utterance indices of the next batch."""
        k = self.length_grouping
        if k == 1:
            return torch.randint(0, len(self.line_starts), (self.batch_size,), generator=self.generator).numpy()
        if not self._pending:
            pool = torch.randint(0, len(self.line_starts), (self.batch_size * k,), generator=self.generator).numpy()
            lengths = self.line_ends[pool] - self.line_starts[pool]
            pool = pool[np.argsort(lengths, kind="stable")]
            order = torch.randperm(k, generator=self.generator).tolist()
            self._pending = [pool[i * self.batch_size:(i + 1) * self.batch_size] for i in order]
        return self._pending.pop(0)

    def _lines_batch(self) -> torch.Tensor:
        pick = self._draw_lines()
        rows = [np.asarray(self.tokens[s:min(e, s + self.body)], dtype=np.int64)
                for s, e in zip(self.line_starts[pick], self.line_ends[pick])]
        width = max(len(r) for r in rows) + 2
        ids = torch.full((self.batch_size, width), PAD_ID, dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, 0], ids[i, len(r) + 1] = BOS_ID, EOS_ID
            ids[i, 1:len(r) + 1] = torch.from_numpy(r)
        return ids

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self.packing in ("lines", "packed"):
            ids = self._lines_batch()
            masked, labels = mask_tokens(ids, self.vocab_size, self.generator, **self.probs)
            batch = {"input_ids": masked, "attention_mask": (ids != PAD_ID).long(), "labels": labels}
            if self.world > 1:
                return self._shard(batch)
            return pack_lines(batch, self.block_size) if self.packing == "packed" else add_targets(batch)
        starts = torch.randint(0, len(self.tokens) - self.body + 1, (self.batch_size,), generator=self.generator)
        body = np.stack([np.asarray(self.tokens[s:s + self.body], dtype=np.int64) for s in starts.tolist()])
        ids = torch.from_numpy(body)
        ids = torch.cat([torch.full((self.batch_size, 1), BOS_ID), ids, torch.full((self.batch_size, 1), EOS_ID)], 1)
        masked, labels = mask_tokens(ids, self.vocab_size, self.generator, **self.probs)
        batch = {"input_ids": masked, "attention_mask": torch.ones_like(masked), "labels": labels}
        return self._shard(batch) if self.world > 1 else add_targets(batch)

    def _shard(self, batch: dict) -> dict:
        """This rank's rows of a global batch, weighted by the global count of predicted tokens."""
        n_global = int((batch["labels"] != IGNORE_INDEX).sum())
        b = self.batch_size // self.world
        part = {k: v[self.rank * b:(self.rank + 1) * b] for k, v in batch.items()}
        part = pack_lines(part, self.block_size) if self.packing == "packed" else add_targets(part)
        part["token_weight"] = torch.full((part["n_pred"],), 1.0 / max(n_global, 1))
        part["n_pred_global"] = n_global
        return part

    def fixed_batches(self, n: int, seed: int = 1234) -> list[dict[str, torch.Tensor]]:
        """``n`` batches from a fresh generator: the same every call, for comparable dev losses."""
        saved, pending = self.generator.get_state(), self._pending
        self.generator.manual_seed(seed)
        self._pending = []
        try:
            return [self.next_batch() for _ in range(n)]
        finally:
            self.generator.set_state(saved)
            self._pending = pending

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "pending": [p.tolist() for p in self._pending]}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self._pending = [np.asarray(p, dtype=np.int64) for p in state.get("pending", [])]


def describe_batch(batch: dict, tokenizer, max_tokens: int = 64) -> list[str]:
    """Each row of a masked batch as text: ``[label→input]`` where a token was selected for prediction."""
    out = []
    for ids, labels in zip(batch["input_ids"].tolist(), batch["labels"].tolist()):
        parts = []
        for i, y in list(zip(ids, labels))[:max_tokens]:
            shown = tokenizer.convert_ids_to_tokens(i).replace("Ġ", "_")
            if y != IGNORE_INDEX:
                shown = f"[{tokenizer.convert_ids_to_tokens(y).replace('Ġ', '_')}→{shown}]"
            parts.append(shown)
        out.append(" ".join(parts))
    return out
