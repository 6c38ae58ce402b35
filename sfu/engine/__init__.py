"""The media engine: the only code that reads or writes per-packet state after decryption.

Two implementations of one interface (see `reference.Engine` for the commands and what they do):
* `sfu.engine._native.Engine`, C against the CPython API (sfu/engine/native/), built by `make install`
  (`setup.py build_ext --inplace`) against Debian's libsrtp2: the default;
* `sfu.engine.reference.Engine`, pure Python: the specification, held byte for byte to the native one by
  tests/sfu/test_engine_diff.py, and the fallback.

`CLASSCAST_ENGINE=python|native` chooses; native is the default, and when the extension cannot be imported the
Python engine runs and says so loudly in the log.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from sfu.engine.reference import (
    CODEC_H264,
    CODEC_OTHER,
    CODEC_VP8,
    DROP_REASONS,
    F_ACCEPTED,
    F_EVENTS,
    F_KEYFRAME,
    stamp_arrivals,
)
from sfu.engine.reference import Engine as PythonEngine
from sfu.engine.reference import EngineError as PythonEngineError

__all__ = [
    "CODEC_H264",
    "CODEC_OTHER",
    "CODEC_VP8",
    "DROP_REASONS",
    "ENGINE_ERRORS",
    "F_ACCEPTED",
    "F_EVENTS",
    "F_KEYFRAME",
    "PythonEngine",
    "engine_kind",
    "native_engine_class",
    "new_engine",
    "stamp_arrivals",
]

log = logging.getLogger("classcast.sfu.engine")

try:
    from sfu.engine import _native
except ImportError as exc:  # not built: `make install` builds it
    _native = None  # type: ignore[assignment]
    _IMPORT_ERROR: str | None = str(exc)
else:
    _IMPORT_ERROR = None

ENGINE_ERRORS: tuple[type[Exception], ...] = (PythonEngineError,) + ((_native.EngineError,) if _native else ())
_warned = False


def native_engine_class() -> Any:
    """The native Engine class, or None when the extension is not built."""
    return _native.Engine if _native is not None else None


def engine_kind() -> str:
    """Which engine `new_engine` makes: CLASSCAST_ENGINE (python|native, default native), python when the
    extension is missing."""
    global _warned
    wanted = os.environ.get("CLASSCAST_ENGINE", "native").strip().lower() or "native"
    if wanted not in ("python", "native"):
        raise ValueError(f"CLASSCAST_ENGINE must be python or native, not {wanted!r}")
    if wanted == "native" and _native is None:
        if not _warned:
            log.warning("the native media engine is not built (%s): forwarding runs on the Python reference "
                        "engine, several times slower; run `make install` to build it", _IMPORT_ERROR)
            _warned = True
        return "python"
    return wanted


def new_engine() -> Any:
    """A fresh engine of the configured kind."""
    return _native.Engine() if engine_kind() == "native" else PythonEngine()
