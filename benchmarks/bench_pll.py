"""PLL scoring: ours (``dwml.evaluate.pll_scores``) against minicons' ``MaskedLMScorer``, in one run.

On the same saved model and the same BLiMP sentences it times, one after the other:
  (ref) minicons 0.3.39, in its own environment (it calls ``batch_encode_plus``, which transformers 5
        removed, so it runs under transformers 4 through ``benchmarks/minicons_pll.py``; no shim);
  (a)   ours in float32, which must give the same scores (|diff| < 1e-3: minicons sums in float32);
  (b)   ours under bfloat16 autocast, which must decide the same way on >= 99.5% of pairs;
  (c)   ours under the ``babylm2024`` convention against minicons' ``conditional_score`` called as the
        BabyLM 2024 pipeline's ``hf-mlm`` model calls it (context ``'</s>'``, continuation ``' ' + sentence``,
        the mean), which must give the same scores (|diff| < 1e-3).
and reports the speed-ups against minicons, the FLOP floor of the work at this CPU's measured float32
matmul peak, and optionally (``--full``) the time to score the whole filtered BLiMP with a small peer.

The model is a random RoBERTa (4 layers, hidden 256, vocab 8,192 from a tokenizer trained on the
AO-CHILDES corpus): PLL's cost does not depend on the weights, and equality of scores is checked exactly.

Run (after creating the minicons environment, see ``minicons_pll.py``):
    flock /tmp/dwml-torch.lock .venv/bin/python benchmarks/bench_pll.py --minicons-python /tmp/minicons-venv/bin/python
Writes benchmarks/results/pll.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "pll.md"


def build_model(out: Path, data: Path, vocab: int, hidden: int, layers: int, block: int):
    from transformers import RobertaConfig, RobertaForMaskedLM

    from dwml.corpus import read_corpus
    from dwml.tokenizer import train_tokenizer

    tok = train_tokenizer(read_corpus(data / "corpus", "train"), vocab_size=vocab, out_dir=out)
    torch.manual_seed(0)
    model = RobertaForMaskedLM(RobertaConfig(
        vocab_size=len(tok), hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64),
        intermediate_size=4 * hidden, max_position_embeddings=block + 2, pad_token_id=1))
    model.save_pretrained(out)
    return model.eval(), tok


def timed(fn):
    fn()  # warm-up: allocator, thread pool, oneDNN kernels
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(HERE.parent.parent / "shared" / "data"))
    ap.add_argument("--pairs", type=int, default=1000, help="BLiMP pairs (2 sentences each)")
    ap.add_argument("--minicons-python", default="/tmp/minicons-venv/bin/python")
    ap.add_argument("--batch-size", type=int, default=256, help="masked copies per forward pass (ours)")
    ap.add_argument("--full", action="store_true", help="also score all of BLiMP with a default-sized peer")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    from dwml.evaluate import encode_for_pll, pll_scores, subsample
    from dwml.suites import load_blimp
    from dwml.profiling import analytic_step_flops, measure_matmul_peak

    data = Path(args.data)
    pairs = load_blimp(data / "blimp_filtered")
    per_task = max(1, args.pairs // len({p.task for p in pairs}))
    sample = subsample(pairs, per_task + 1, seed=0)[: args.pairs]
    sentences = [p.good for p in sample] + [p.bad for p in sample]
    n = len(sample)
    lines = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "peer"
        model, tok = build_model(model_dir, data, vocab=8192, hidden=256, layers=4, block=128)
        params = sum(p.numel() for p in model.parameters())
        enc = encode_for_pll(tok, sentences)
        copies = sum(e - s for _, s, e in enc)
        # FLOP floor: each copy is one forward pass over its sentence, the LM head at one position.
        flops = sum((e - s) * analytic_step_flops(model.config, len(ids), len(ids), backward=False, head_tokens=1)
                    for ids, s, e in enc)
        peak = measure_matmul_peak(torch.float32)
        floor_s = flops / peak

        # (ref) minicons, in its own environment
        job = Path(tmp) / "job.json"
        res = Path(tmp) / "res.json"
        job.write_text(json.dumps({"model_dir": str(model_dir), "sentences": sentences, "prefixes": None,
                                   "batch_sentences": 64, "threads": args.threads}))
        ref = ref24 = None
        if Path(args.minicons_python).is_file():
            subprocess.run([args.minicons_python, str(HERE / "minicons_pll.py"), str(job), str(res)], check=True)
            ref = json.loads(res.read_text())
            job.write_text(json.dumps({**json.loads(job.read_text()), "mode": "babylm2024"}))
            subprocess.run([args.minicons_python, str(HERE / "minicons_pll.py"), str(job), str(res)], check=True)
            ref24 = json.loads(res.read_text())
        else:
            print(f"minicons environment {args.minicons_python} not found: reference skipped", file=sys.stderr)

        f32, t32 = timed(lambda: pll_scores(model, tok, sentences, batch_size=args.batch_size, progress=False))
        bf16, t16 = timed(lambda: pll_scores(model, tok, sentences, batch_size=args.batch_size, dtype="bfloat16",
                                             progress=False))
        b24, t24 = timed(lambda: pll_scores(model, tok, sentences, batch_size=args.batch_size, reduction="mean",
                                            prefixing="babylm2024", progress=False))
    dec32 = f32[:n] > f32[n:]
    dec16 = bf16[:n] > bf16[n:]
    lines += ["# PLL scoring: ours against minicons", "",
              f"Command: `{' '.join([Path(sys.argv[0]).name] + (argv or sys.argv[1:]))}`  ",
              f"Machine: {platform.machine()}, {args.threads} torch threads, torch {torch.__version__}; "
              f"measured float32 matmul peak {peak / 1e9:.1f} GFLOP/s.  ",
              f"Model: random RoBERTa, 4 layers x 256 hidden, vocab {len(tok):,}, {params / 1e6:.2f}M parameters.  ",
              f"Work: {len(sentences):,} BLiMP sentences ({n:,} pairs, seeded subsample over all paradigms), "
              f"{copies:,} masked copies, {flops / 1e9:.1f} GFLOP (analytic), floor {floor_s:.1f} s at the peak.", "",
              "| scorer | seconds | x minicons (speed-up) | x FLOP floor | max abs diff vs minicons | same decision |",
              "|---|---:|---:|---:|---:|---:|"]
    if ref is not None:
        r = np.array(ref["scores"])
        decr = r[:n] > r[n:]
        lines.append(f"| minicons {ref['versions']['minicons']} (transformers {ref['versions']['transformers']}) "
                     f"| {ref['seconds']:.1f} | 1.00 | {ref['seconds'] / floor_s:.1f} | 0 | 100% |")
        for name, s, t, d in (("ours, float32", f32, t32, dec32), ("ours, bfloat16 autocast", bf16, t16, dec16)):
            lines.append(f"| {name} | {t:.1f} | {ref['seconds'] / t:.2f} | {t / floor_s:.1f} | "
                         f"{np.abs(s - r).max():.2e} | {100 * (d == decr).mean():.2f}% |")
    else:
        lines.append(f"| ours, float32 | {t32:.1f} | n/a | {t32 / floor_s:.1f} | n/a | n/a |")
        lines.append(f"| ours, bfloat16 autocast | {t16:.1f} | n/a | {t16 / floor_s:.1f} | "
                     f"{np.abs(bf16 - f32).max():.2e} (vs ours f32) | {100 * (dec16 == dec32).mean():.2f}% (vs ours f32) |")
    lines += ["", f"bfloat16 against our float32: same decision on {100 * (dec16 == dec32).mean():.2f}% of pairs, "
              f"max |diff| {np.abs(bf16 - f32).max():.3f}."]
    lines += ["", "## The BabyLM 2024 convention", "",
              "minicons `conditional_score(['</s>'], [' ' + sentence])` with its default reduction (the mean), as the "
              "2024 pipeline's `hf-mlm` model calls it (its text: `'</s>' + '  ' + sentence`), against "
              "`pll_scores(..., reduction='mean', prefixing='babylm2024')` (the `--convention babylm2024` preset), "
              "float32, same model and sentences.", ""]
    if ref24 is not None:
        r24 = np.array(ref24["scores"])
        d24, dref = b24[:n] >= b24[n:], r24[:n] >= r24[n:]  # ties right under this convention
        diff = np.abs(b24 - r24).max()
        lines += ["| scorer | seconds | x minicons (speed-up) | max abs diff vs minicons | same decision (ties right) |",
                  "|---|---:|---:|---:|---:|",
                  f"| minicons conditional_score (2024 pipeline call) | {ref24['seconds']:.1f} | 1.00 | 0 | 100% |",
                  f"| ours, babylm2024 preset | {t24:.1f} | {ref24['seconds'] / t24:.2f} | {diff:.2e} | "
                  f"{100 * (d24 == dref).mean():.2f}% |", "",
                  f"Equal within 1e-3: {'yes' if diff < 1e-3 else 'NO'}; accuracy (ties right, micro over these pairs): "
                  f"ours {100 * d24.mean():.2f}%, minicons {100 * dref.mean():.2f}%."]
    else:
        lines.append(f"minicons environment not found: ours alone, {t24:.1f} s.")

    if args.full:
        from transformers import RobertaConfig, RobertaForMaskedLM

        from dwml.corpus import read_corpus
        from dwml.tokenizer import train_tokenizer

        tok2 = train_tokenizer(read_corpus(data / "corpus", "train"), vocab_size=2048)
        torch.manual_seed(0)
        small = RobertaForMaskedLM(RobertaConfig(vocab_size=len(tok2), hidden_size=192, num_hidden_layers=4,
                                                 num_attention_heads=4, intermediate_size=768,
                                                 max_position_embeddings=130, pad_token_id=1)).eval()
        allsent = [p.good for p in pairs] + [p.bad for p in pairs]
        t0 = time.perf_counter()
        pll_scores(small, tok2, allsent, batch_size=args.batch_size, dtype="bfloat16", progress=True)
        tfull = time.perf_counter() - t0
        lines += ["", f"Whole filtered BLiMP ({len(pairs):,} pairs, {len(allsent):,} sentences) with a default-sized "
                  f"peer (4 x 192, vocab {len(tok2):,}, {sum(p.numel() for p in small.parameters()) / 1e6:.2f}M "
                  f"parameters), bfloat16: {tfull / 60:.1f} min."]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
