"""Logging on stdout: one JSON object per line that Cloud Logging reads as a structured entry
(``SERVE_LOG_FORMAT=json``, the default), or plain text lines (``text``).

Why a small stdlib formatter rather than a library: python-json-logger and structlog are not
dependencies of the project, and what Cloud Logging needs is a handful of fields: ``severity``
(Python's level names are Cloud Logging severities), ``message`` (a traceback is appended to it,
so Error Reporting picks it up and the record stays one line), ``time`` (RFC 3339), plus
``logger``, ``request_id`` (from :data:`REQUEST_ID`, set for each request by
:func:`app.middleware.log_requests`, so any log line written while serving a request carries
it, threads included) and whatever the call passes as ``extra`` (``httpRequest``, ``model``...).
"""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("request_id", default=None)
# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",  # uvicorn's message with terminal colours
}


class JsonFormatter(logging.Formatter):
    """A record as one line of JSON in Cloud Logging's structured-logging shape."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info:
            message = f"{message}\n{self.formatException(record.exc_info)}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": message,
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "logger": record.name,
        }
        request_id = REQUEST_ID.get()
        if request_id is not None:
            entry["request_id"] = request_id
        if record.levelno >= logging.WARNING:
            entry["logging.googleapis.com/sourceLocation"] = {
                "file": record.pathname,
                "line": str(record.lineno),
                "function": record.funcName,
            }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        return json.dumps(entry, default=str, ensure_ascii=False)


class _RequestIdFilter(logging.Filter):
    """Text format: ``[request id]`` after the logger name, when there is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        rid = REQUEST_ID.get()
        record.rid = f" [{rid}]" if rid else ""
        return True


def setup_logging(level: str, fmt: str) -> None:
    """Send every logger's records (uvicorn's and Python warnings included) to stdout."""
    handler = logging.StreamHandler(sys.stdout)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.addFilter(_RequestIdFilter())
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")
        )
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "litestar"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    logging.captureWarnings(True)
