"""JSON as the wire needs it: strict both ways, the one place the control plane reads or writes JSON from a client.

Python's `json` accepts and writes `NaN` and `Infinity`, which are not JSON: a browser's `JSON.parse` throws on
them. It also raises `RecursionError` (not `ValueError`) on deeply nested input. Here both directions are
strict, and every failure to read is a `ValueError` the caller turns into its documented error code.
"""

from __future__ import annotations

import json
from typing import Any


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_decoder = json.JSONDecoder(parse_constant=_no_constant)


def loads(text: str | bytes) -> Any:
    """The JSON value of `text`; ValueError for anything that is not strict JSON or is nested too deeply."""
    if isinstance(text, bytes | bytearray):
        text = text.decode("utf-8")  # UnicodeDecodeError is a ValueError
    try:
        return _decoder.decode(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def dumps(value: Any) -> str:
    """Strict JSON text; ValueError for NaN or infinities (a bug to surface, never text a browser cannot read)."""
    return json.dumps(value, allow_nan=False)
