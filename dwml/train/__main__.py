"""One training run as a command: ``python -m dwml.train --profile ci --method dwml --seed 0``.

Alone it runs in this process; under ``torchrun --nproc_per_node N`` every process runs it and the run is
data parallel over the N ranks (``dwml.distributed``; ``train.nproc`` is set to N). The run is the one the
notebooks get from :func:`dwml.runs.train_run`: the profile's corpus and searched peers
(``<run_root>/peers.json``, searched first if missing), in ``<run_root>/<method>[_<tag>]_seed<seed>``
unless ``--run-dir`` names another folder; a finished folder is reused, an interrupted one resumes.

    python -m dwml.train --profile default --method dwml --seed 0 --set train.num_epochs=50
    torchrun --nproc_per_node 4 -m dwml.train --profile gpu --method dwml --seed 0
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dwml.config import positive_int, seed_int  # argparse types: range-checked options, named by argparse

SECTION_NAMES = ("data", "search", "train")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m dwml.train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--profile", help="a profile name (profiles/<name>.yaml) or a YAML file")
    src.add_argument("--sections", help="a JSON file {data, search, train} (what dwml.runs.launch_run passes)")
    ap.add_argument("--method", required=True, help="a registered method (dwml.methods.METHODS), e.g. mlm or dwml")
    ap.add_argument("--seed", type=seed_int, required=True)
    ap.add_argument("--run-root", default=None, help="where peers.json and run folders live (default: the profile's)")
    ap.add_argument("--run-dir", default=None, help="the run folder (default: <run-root>/<method>[_<tag>]_seed<seed>)")
    ap.add_argument("--tag", default="", help="suffix of the run folder's name (runs with overrides)")
    ap.add_argument("--num-peers", type=positive_int, default=None, help="train only the first (largest) peers")
    ap.add_argument("--teacher-dir", default="", help="the teacher of a method that uses one, e.g. kd (a finished mlm run's peer_0)")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="override a setting (YAML value), e.g. --set train.num_epochs=50; repeatable")
    ap.add_argument("--max-steps", type=positive_int, default=None, help="stop after this many steps in all (a checkpoint)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    return ap


def apply_overrides(sections: dict, items: list[str]) -> dict:
    """``section.key=value`` items (values parsed as YAML) applied to copies of the sections."""
    import yaml

    from dwml.config import ConfigError

    out = {k: dict(sections.get(k) or {}) for k in SECTION_NAMES}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, field = key.strip().partition(".")
        if not sep or not dot or section not in SECTION_NAMES or not field:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE with SECTION one of {', '.join(SECTION_NAMES)}")
        out[section][field] = yaml.safe_load(value)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from dwml.config import Config, ConfigError
    from dwml.distributed import barrier, env_ranks, setup
    from dwml.runs import train_run
    from dwml.io import project_path, read_utf8
    from dwml.device import resolve_device

    if args.profile:
        from dwml.runner import load_profile

        profile = load_profile(args.profile)
    else:
        profile = json.loads(read_utf8(args.sections, ConfigError))
    sections = apply_overrides(profile, args.set)
    run_root = args.run_root or profile.get("run_root")
    if not run_root:
        raise ConfigError("no run root: give --run-root (the profile has no run_root)")
    ranks = env_ranks()
    if ranks.active:  # the launch decides the number of processes
        sections["train"]["nproc"] = ranks.world
    cfg = Config.from_dict(**sections)
    ranks, _ = setup(resolve_device(cfg.train.device))

    def prepare():
        from dwml.data import prepare_corpus
        from dwml.tokenizer import tokenizer_fingerprint
        from dwml.search import ensure_peers

        prep = prepare_corpus(cfg.data, progress=not args.no_progress and ranks.main)
        archs, meta = ensure_peers(project_path(run_root) / "peers.json", cfg.search, len(prep.tokenizer),
                                   cfg.data.block_size + 2, data_vocab_size=cfg.data.vocab_size,
                                   tokenizer=tokenizer_fingerprint(prep.tokenizer))
        return prep, archs, meta

    if ranks.main:  # rank 0 builds the caches and searches the peers; the others then read them
        prep, archs, meta = prepare()
    barrier(ranks)
    if not ranks.main:
        prep, archs, meta = prepare()
    result = train_run(sections, prep, archs, meta, args.method, args.seed, run_root, teacher_dir=args.teacher_dir,
                       tag=args.tag, num_peers=args.num_peers, progress=not args.no_progress and ranks.main,
                       run_dir=args.run_dir, max_steps=args.max_steps)
    if ranks.main:
        print(json.dumps({"run_dir": str(Path(result.run_dir)), "done": result.done, "weights": result.weights}))
    if ranks.active:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
