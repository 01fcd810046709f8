"""Daemon logging in containerd's logfmt shape.

``time="..." level=info msg="..." key=value``: the same lines an operator
greps in containerd's journal, with any ``extra=`` fields appended.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys

__all__ = ["LEVELS", "setup"]

LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "fatal": logging.CRITICAL,
    "panic": logging.CRITICAL,
}
_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warning",
    logging.ERROR: "error",
    logging.CRITICAL: "fatal",
}
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _quote(value: object) -> str:
    s = str(value)
    if s and all(c.isalnum() or c in "-._/:@" for c in s):
        return s
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="microseconds")
        parts = [
            f'time="{ts.replace("+00:00", "Z")}"',
            f"level={_NAMES.get(record.levelno, record.levelname.lower())}",
            f"msg={_quote(record.getMessage())}",
        ]
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                parts.append(f"{key}={_quote(value)}")
        if record.exc_info:
            parts.append(f"error={_quote(self.formatException(record.exc_info))}")
        return " ".join(parts)


def setup(level: str) -> None:
    """Send pycontainerd's logs to stderr at ``level`` (containerd's level names)."""
    if level.lower() not in LEVELS:
        raise ValueError(f"unknown log level {level!r} (want one of {', '.join(LEVELS)})")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(LogfmtFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level.lower()])
    # Library chatter (grpc's event-loop notes, asyncio's selector) stays out of debug logs.
    for noisy in ("grpc", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.INFO, root.level))
