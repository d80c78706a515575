"""Structured logging. Values are key=value (or JSON); secret material never reaches a log call."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_RESERVED = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _RESERVED}


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        parts = [f"{ts}.{int(record.msecs):03d}Z", record.levelname[0], f"{record.getMessage()!r}"]
        parts += [f"{k}={_render(v)}" for k, v in _fields(record).items()]
        if record.exc_info:
            parts.append("exc=" + repr(self.formatException(record.exc_info)))
        return " ".join(parts)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": record.created,
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        doc.update(
            {k: v if isinstance(v, (int, float, bool)) else str(v) for k, v in _fields(record).items()}
        )
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, sort_keys=False)


def _render(value: object) -> str:
    text = str(value)
    return text if text and " " not in text and '"' not in text else json.dumps(text)


def setup(*, json_format: bool, verbosity: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_format else KeyValueFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbosity >= 4 else logging.INFO)
    # Quiet chatty libraries unless asked for.
    for name in ("httpx", "httpx2", "httpcore", "httpcore2", "grpc"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbosity >= 6 else logging.WARNING)
