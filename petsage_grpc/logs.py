"""Logging set-up for the `serve` command: one line per event, as text or as JSON.

JSON lines carry `time`, `level`, `logger`, `event`, `message`, and the fields the event was
logged with (`extra=`): service, old and new status, check, error, peer, method, code ...
"""

from __future__ import annotations

import datetime
import json
import logging
import sys

# Attributes every LogRecord has; whatever else a record carries came with `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


class JSONFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "event": getattr(record, "event", "log"),
            "message": record.getMessage(),
        }
        line.update(
            (key, value)
            for key, value in vars(record).items()
            if key not in _STANDARD and key != "event"
        )
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


def _client_gone(debug: bool) -> logging.Filter:
    """grpc logs an ERROR with a traceback whenever a client goes away while a message is being
    written to it (a Watch client that disconnects): an everyday event, kept for debug."""

    def keep(record: logging.LogRecord) -> bool:
        if str(record.msg).startswith("ExecuteBatchError raised in core by servicer method"):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            record.msg, record.args, record.exc_info = "a client went away: %s", (record.msg,), None
            return debug
        return True

    filter_ = logging.Filter()
    filter_.filter = keep  # type: ignore[method-assign]
    return filter_


def setup_logging(level: str, log_format: str) -> None:
    """Log to stderr at `level` ("debug" ... "error"), as `log_format` ("text" or "json")."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("grpc._cython.cygrpc").addFilter(_client_gone(level == "debug"))
