"""The minimal-pair suites: one module each, and the one map of them (:mod:`dwml.suites.registry`).

A new suite is a module that calls ``register(Suite(...))`` (see ``zorro.py``) and one import line below.
"""
from dwml.suites.registry import (SUITES, EvalDataError, MinimalPair, Suite, check_known, get, load, names,  # noqa: F401
                                  paper_names, read_jsonl, references, register)
from dwml.suites import blimp, supplement, ewok, zorro, synthetic  # noqa: F401,E402  (each registers itself)
from dwml.suites.blimp import PHENOMENA, PHENOMENON_COLUMNS, load_blimp  # noqa: F401,E402
from dwml.suites.supplement import SUPPLEMENT_COLUMNS, load_supplement  # noqa: F401,E402
from dwml.suites.ewok import EWOK_COLUMNS, EWOK_DOMAINS, load_ewok  # noqa: F401,E402
from dwml.suites.zorro import load_zorro, write_zorro  # noqa: F401,E402
from dwml.suites.synthetic import load_synthetic  # noqa: F401,E402
