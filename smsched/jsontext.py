"""JSON as every reader accepts it: a number that is not finite (NaN, Infinity) is written as
null, never as the bare NaN/Infinity tokens Python's json module would emit."""

from __future__ import annotations

import json
import math
from typing import Any


def dumps(data: Any, **options) -> str:
    try:
        return json.dumps(data, allow_nan=False, **options)
    except ValueError:  # rare: only then walk the data
        return json.dumps(_finite(data), allow_nan=False, **options)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
