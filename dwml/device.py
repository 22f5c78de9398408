"""Which device a setting names: ``'auto'``, ``'cpu'`` or ``'cuda[:n]'``, checked against what is present.

On the lowest floor so that the loop and both commands (``python -m dwml.train``, ``python -m dwml.evaluate``)
read the setting the same way without importing one another.
"""
from __future__ import annotations

import torch

from dwml.config import ConfigError


def resolve_device(name: str, param: str = "train.device") -> torch.device:
    """'auto' (CUDA if present), 'cpu' or 'cuda[:n]' as a device; ``param`` names the setting in errors."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{param}={name!r}: no CUDA device is available")
    return dev
