"""The studies: one module per notebook that compares runs, holding what that notebook computes; the notebook
narrates and calls. :mod:`dwml.studies.study` holds what they share (the set-up, a method's runs scored, the
paper's numbers). A new study is a module here and its line in ``NOTEBOOKS``."""
from dwml.studies import ablations, baselines, costs, published_bugs, study  # noqa: F401

NOTEBOOKS = {
    "03_baselines": (baselines, published_bugs),  # Tables 1, 2, 6-8, the learning curves, the published bugs
    "04_ablations": (ablations,),  # Figure 2 over seeds, and which claims survive
    "05_gpu_profiling": (costs,),  # Table 9, Figure 4: utilisation, FLOPs, training time
}
"""Notebook -> the study modules it calls."""
