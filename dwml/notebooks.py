"""The papermill runner's former name: ``python -m dwml.notebooks`` runs :mod:`dwml.runner` (same arguments)."""
from __future__ import annotations

import sys

from dwml.runner import main

if __name__ == "__main__":
    sys.exit(main())
