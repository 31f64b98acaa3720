"""Checkpoint files: one grucy archive of kind ``"grucy.checkpoint"`` holding the complete
state of a training run (written and restored by :class:`~grucy.training.Trainer`).
"""

from __future__ import annotations

import math
import os
from typing import Dict, Tuple, Union

import numpy as np

from .. import io

__all__ = ["CHECKPOINT_KIND", "read_checkpoint"]

CHECKPOINT_KIND = "grucy.checkpoint"
_CHECKPOINT_VERSION = 1


def read_checkpoint(path: Union[str, "os.PathLike[str]"]) -> Tuple[dict, Dict[str, np.ndarray]]:
    """``(config, arrays)`` of a checkpoint written by :class:`Trainer` (checked kind)."""
    return _read_checkpoint(path)[:2]


def _read_checkpoint(path):
    """:func:`read_checkpoint`'s ``(config, arrays)`` and the file's verified SHA-256."""
    _, config, arrays, checksum = io._read_archive(path, CHECKPOINT_KIND)
    if not isinstance(config, dict) or config.get("version") != _CHECKPOINT_VERSION:
        raise io.FileFormatError(f"{os.fspath(path)}: unsupported checkpoint version "
                                 f"{config.get('version') if isinstance(config, dict) else None}")
    return config, arrays, checksum


def _json_floats(values):
    """Floats with NaN/inf as None (JSON has no NaN)."""
    return [v if v is None or math.isfinite(v) else None for v in values]


def _from_json_floats(values):
    return [math.nan if v is None else float(v) for v in values]
