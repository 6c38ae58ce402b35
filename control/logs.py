"""Structured logs: one JSON object per line on stderr, one line per HTTP request."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class MalformedRequests(logging.Filter):
    """aiohttp logs every request its parser refused (a line past 8 KiB, a NUL in a header, an unknown method) as
    an ERROR with a traceback: any client could fill the error log. They are the client's fault, answered 400:
    one INFO line each, its reason cut short (it may echo kilobytes of the request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError) and record.levelno > logging.INFO:
            record.levelno, record.levelname = logging.INFO, "INFO"
            remote = record.args[0] if isinstance(record.args, tuple) and record.args else None
            record.msg, record.args = "malformed HTTP request from %s refused: %s", (remote, str(exc)[:200])
            record.exc_info = record.exc_text = None
        return True


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)  # our middleware writes the request line
    quiet_malformed_requests()


def quiet_malformed_requests() -> None:
    """Installs `MalformedRequests` once (the app does, so that a server embedded without our logging gets it)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, MalformedRequests) for f in server.filters):
        server.addFilter(MalformedRequests())
