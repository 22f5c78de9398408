"""Score sentences with minicons' MaskedLMScorer: the reference that ``bench_pll.py`` times ours against.

Runs in its own environment (minicons 0.3.39 calls ``batch_encode_plus``, which transformers 5 removed),
e.g. ``python3 -m venv /tmp/minicons-venv && /tmp/minicons-venv/bin/pip install torch==2.13.0
'transformers<5' minicons==0.3.39``. Reads a JSON job, writes a JSON result:

    python minicons_pll.py job.json result.json

job: ``{"model_dir", "sentences", "prefixes" (or null), "batch_sentences", "threads", "mode"}``;
result: ``{"scores", "seconds", "versions"}``. ``mode`` 'sum' (the default): summed log-probabilities
("PLL-original", ``sequence_score`` / ``conditional_score`` with a sum); 'babylm2024': as the BabyLM 2024
pipeline's ``hf-mlm`` model calls minicons: ``conditional_score(context, continuation)`` with its default
separator and reduction (the mean), the empty context replaced by the end token and lm-eval's target
delimiter (a space) before the sentence.
"""
import json
import sys
import time


def main(job_path: str, out_path: str) -> None:
    import minicons
    import torch
    import transformers
    from minicons import scorer
    from transformers import PreTrainedTokenizerFast

    job = json.load(open(job_path))
    torch.set_num_threads(job["threads"])
    # The tokenizer was saved by transformers 5, whose tokenizer_config names a class that transformers 4
    # lacks; the tokenizer.json itself is version-independent, so build the fast tokenizer from it.
    # add_prefix_space=True is needed: without it transformers 4 rewrites the saved ByteLevel pre-tokenizer
    # to add_prefix_space=False, so the first word gets other ids ("Who" -> "wh" "o", not "Ġwho") and
    # every score differs (seen: 80% of pairs decided alike, max difference 28 nats).
    tok = PreTrainedTokenizerFast(tokenizer_file=f"{job['model_dir']}/tokenizer.json", bos_token="<s>",
                                  eos_token="</s>", unk_token="<unk>", pad_token="<pad>", mask_token="<mask>",
                                  cls_token="<s>", sep_token="</s>", add_prefix_space=True)
    model = transformers.AutoModelForMaskedLM.from_pretrained(job["model_dir"])
    mlm = scorer.MaskedLMScorer(model, "cpu", tokenizer=tok)
    sentences, prefixes, bs = job["sentences"], job.get("prefixes"), job["batch_sentences"]
    total = lambda x: x.sum(0).item()  # noqa: E731  (sum of token log-probs, as BabyLM's PLL)
    mode = job.get("mode", "sum")

    def run(sl):
        if mode == "babylm2024":
            contexts = [p if p else tok.eos_token for p in (prefixes[sl] if prefixes is not None
                                                             else [""] * len(sentences[sl]))]
            return mlm.conditional_score(contexts, [" " + s for s in sentences[sl]])
        if prefixes is None:
            return mlm.sequence_score(sentences[sl], reduction=total)
        return mlm.conditional_score(prefixes[sl], sentences[sl], reduction=total)

    run(slice(0, min(bs, len(sentences))))  # warm-up (allocator, thread pool), not timed
    start = time.perf_counter()
    scores = []
    for lo in range(0, len(sentences), bs):
        scores.extend(run(slice(lo, lo + bs)))
    seconds = time.perf_counter() - start
    json.dump({"scores": scores, "seconds": seconds,
               "versions": {"minicons": getattr(minicons, "__version__", "0.3.39"), "transformers": transformers.__version__,
                            "torch": torch.__version__}}, open(out_path, "w"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
