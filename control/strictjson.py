"""JSON as the wire needs it: strict both ways, the one place the control plane reads or writes JSON from a client.

Python's `json` accepts and writes `NaN` and `Infinity`, which are not JSON: a browser's `JSON.parse` throws on
them. It also raises `RecursionError` (not `ValueError`) on deeply nested input. Here both directions are
strict, and every failure to read is a `ValueError` the caller turns into its documented error code.
"""

from __future__ import annotations

import json
import math
from typing import Any


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    """A JSON number Python would read as an infinity (`1e999`): written back it would be `Infinity`, not JSON."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


_decoder = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)


def loads(text: str | bytes) -> Any:
    """The JSON value of `text`; ValueError for anything that is not strict JSON, is nested too deeply, holds a
    lone surrogate (`"\\ud800"`: valid JSON syntax, but no UTF-8 text, so the store and every client choke on it)
    or a number too large for a float (`1e999`)."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        value = _decoder.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
    if "\\u" in text:  # only escapes can make a lone surrogate out of valid UTF-8 text
        _check_text(value)
    return value


def _check_text(value: Any) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            item.encode("utf-8")  # UnicodeEncodeError (a ValueError) names the lone surrogate
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def dumps(value: Any) -> str:
    """Strict JSON text; ValueError for NaN or infinities (a bug to surface, never text a browser cannot read)."""
    return json.dumps(value, allow_nan=False)
