"""metrics.json as strict JSON (RFC 8259), written by `mtl3d eval` and `mtl3d replay`.

Python's ``json`` writes a NaN or infinite float as the bare words ``NaN`` / ``Infinity``, which JavaScript's
``JSON.parse``, Go and most JSON tools reject; a metric that is undefined (a single-view sparsification curve, a mode
without ground truth) is written as ``null`` instead. numpy scalars are written as numbers, integers exactly (a
stamp in nanoseconds does not fit a float's 53 bits).
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np


def strict(value: Any) -> Any:
    """``value`` with every non-finite float (Python or numpy) replaced by None and numpy scalars and arrays made
    Python values and lists, recursively through dicts, lists and tuples."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [strict(v) for v in value]
    if isinstance(value, np.ndarray):
        return strict(value.tolist())
    if isinstance(value, np.generic):  # numpy scalars: int64 stays an exact int, bool_ a bool, float64 a float
        value = value.item()
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    return value


def dumps(value: Any, *, indent: int | None = 2) -> str:
    """``value`` as strict JSON (:func:`strict`); raises ValueError (``allow_nan=False``) or TypeError for what JSON
    cannot hold."""
    return json.dumps(strict(value), indent=indent, allow_nan=False)
