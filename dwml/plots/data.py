"""Figures of the data notebook."""
from __future__ import annotations

import numpy as np

from dwml.tokenizer import EOS_ID


def plot_token_lengths(tokens: np.ndarray, tokenizer, max_len: int = 40):
    """Histogram of utterance lengths in tokens, and the most frequent tokens."""
    import matplotlib.pyplot as plt

    tokens = np.asarray(tokens)
    ends = np.flatnonzero(tokens == EOS_ID)
    lengths = np.diff(np.concatenate([[-1], ends])) - 1
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    a.hist(np.clip(lengths, 0, max_len), bins=np.arange(0, max_len + 2) - 0.5, color="#4c72b0")
    a.set(xlabel=f"utterance length in tokens (clipped at {max_len})", ylabel="utterances",
          title=f"{len(lengths):,} utterances, mean {lengths.mean():.1f} tokens")
    ids, counts = np.unique(tokens[tokens != EOS_ID], return_counts=True)
    top = np.argsort(counts)[::-1][:20]
    labels = [tokenizer.convert_ids_to_tokens(int(i)).replace("Ġ", "") for i in ids[top]]
    b.bar(range(len(top)), counts[top] / counts.sum(), color="#55a868")
    b.set_xticks(range(len(top)), labels, rotation=60, ha="right")
    b.set(ylabel="share of tokens", title="20 most frequent tokens")
    fig.tight_layout()
    return fig
