"""Word n-gram baselines on Zorro: what word statistics of the AO-CHILDES training text alone decide.

Counts ``dwml.ngrams`` models (orders 1, 2, 3) on the training text the ``aochildes`` profile trains on
(``data.corpus``, split ``train``, ``data.drop_markers`` as the profile sets it: the lines
``03_baselines`` gives ``dwml.scoring.ngram_rows``), scores every Zorro pair (a tie counts as wrong,
as for the models), and writes the macro accuracy over the 23 paradigms, on all 2,000 pairs a paradigm
and on the seeded subsamples of ``--subsamples`` pairs a paradigm, with the per-paradigm table.

Run: ``flock /tmp/dwml-torch.lock .venv/bin/python benchmarks/bench_zorro_ngrams.py
--out benchmarks/results/zorro_ngrams.md`` (``DWML_DATA`` or ``../shared/data`` for Zorro).
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dwml import scoring, suites  # noqa: E402
from dwml.corpus import read_corpus  # noqa: E402
from dwml.evaluate import data_root, subsample  # noqa: E402
from dwml.io import atomic_write_text, project_path  # noqa: E402
from dwml.ngrams import ngram_accuracy_table, ngram_pair_scores  # noqa: E402


def cpu() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's machine type."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return platform.machine()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--profile", default="aochildes")
    ap.add_argument("--corpus", default=None, help="corpus folder (default: the profile's data.corpus)")
    ap.add_argument("--zorro", default=None, help="Zorro folder (default: zorro/ under the data root)")
    ap.add_argument("--subsamples", default="300", help="comma-separated pairs per paradigm (seed 0)")
    ap.add_argument("--seeds", type=int, default=10, help="subsample seeds for the spread of a subsample")
    ap.add_argument("--out", default=None, help="Markdown results file")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    prof = yaml.safe_load((ROOT / "profiles" / f"{args.profile}.yaml").read_text())
    corpus = Path(args.corpus) if args.corpus else project_path(prof["data"]["corpus"])
    lines = read_corpus(corpus, "train", drop_markers=bool(prof["data"].get("drop_markers", False)))
    folder = Path(args.zorro) if args.zorro else suites.get("zorro").path(data_root())
    pairs = suites.load("zorro", folder)
    words = sum(len(line.split()) for line in lines)
    print(f"[zorro_ngrams] {len(lines):,} lines, {words:,} words of {corpus}; {len(pairs):,} Zorro pairs from {folder}",
          flush=True)
    scores = ngram_pair_scores(lines, pairs, (1, 2, 3))
    table = ngram_accuracy_table(scores)
    rows = [("all 2,000 pairs a paradigm", table.loc["macro average"])]
    for n in [int(x) for x in args.subsamples.split(",") if x.strip()]:
        macro = []
        for seed in range(args.seeds):
            keep = {(p.task, p.pair_id) for p in subsample(pairs, n, seed)}
            part = scores[[(t, i) in keep for t, i in zip(scores["task"], scores["pair_id"])]]
            macro.append(ngram_accuracy_table(part).loc["macro average"])
        rows.append((f"{n} pairs a paradigm (seed 0)", macro[0]))
        if args.seeds > 1:
            frame = pd.DataFrame(macro)
            rows.append((f"{n} pairs a paradigm, min over seeds 0-{args.seeds - 1}", frame.min()))
            rows.append((f"{n} pairs a paradigm, max over seeds 0-{args.seeds - 1}", frame.max()))
    check = scoring.ngram_rows(lines, {"zorro": pairs}).set_index("model")["zorro"]  # the notebook's function
    ties = scores.groupby("order")["tie"].mean().mul(100)
    seconds = time.perf_counter() - t0
    for label, r in rows:
        print(f"[zorro_ngrams] {label}: " + ", ".join(f"{c} {v:.1f}%" for c, v in r.items()), flush=True)
    if args.out:
        head = "| pairs | " + " | ".join(table.columns) + " |\n|---|" + "---|" * len(table.columns) + "\n"
        body = "".join(f"| {label} | " + " | ".join(f"{v:.2f}" for v in r) + " |\n" for label, r in rows)
        text = (f"# Word n-gram baselines on Zorro, counted on the `{args.profile}` profile's training text\n\n"
                f"Command: `flock /tmp/dwml-torch.lock .venv/bin/python benchmarks/bench_zorro_ngrams.py "
                f"{' '.join(argv if argv is not None else sys.argv[1:])}`\n"
                f"Machine: {cpu()}, Python {platform.python_version()}; "
                f"{seconds:.0f} s.\n\n"
                f"Corpus: `{corpus}` (the profile's `{prof['data']['corpus']}`) split `train`, drop_markers={prof['data'].get('drop_markers', False)}: "
                f"{len(lines):,} lines, {words:,} words. Zorro: {len(pairs):,} pairs, "
                f"{scores['task'].nunique()} paradigms. Models: `dwml.ngrams.NgramLM` (interpolated absolute "
                f"discounting over whitespace words), sentences scored as written; a tie counts as wrong "
                f"(tie rates, all pairs: " + ", ".join(f"{n}-gram {v:.1f}%" for n, v in ties.items()) + ").\n\n"
                "Macro accuracy over the paradigms (%):\n\n" + head + body +
                "\n`dwml.scoring.ngram_rows` (Table 1's rows) on all pairs gives: " +
                ", ".join(f"{k.split(' (')[0]} {v:.2f}" for k, v in check.items()) + ".\n\n"
                "Per paradigm, all pairs (%):\n\n" + table.to_markdown(floatfmt=".1f") + "\n")
        atomic_write_text(project_path(args.out), text)
        print(f"[zorro_ngrams] wrote {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
