"""Logging, configured once at start: plain lines for people, JSON for production."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# The logger handed to Bolt; every logger Bolt makes copies its level and filters.
BOLT_LOGGER = "slack_bolt.pare"


class JsonFormatter(logging.Formatter):
    """One JSON object a line, with the ids a record carries in `extra`."""

    RESERVED = set(vars(logging.makeLogRecord({})))

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in self.RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure(level: str = "INFO", as_json: bool = False) -> None:
    """Configure the root logger once."""
    handler = logging.StreamHandler(sys.stderr)
    if as_json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Client libraries log request bodies at DEBUG; keep them quiet unless asked.
    for noisy in ("botocore", "boto3", "urllib3", "slack_sdk", "slack_bolt", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


class WithholdBodies(logging.Filter):
    """Cut Bolt's messages before the first bracket, where it quotes request bodies."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cut = min((i for i in (message.find("("), message.find("{")) if i >= 0), default=-1)
        if cut >= 0:
            record.msg = message[:cut].rstrip() + " (details withheld: they quote the request)"
            record.args = None
        return True


def bolt_logger() -> logging.Logger:
    """Return the logger to give Bolt: warnings and errors only, never a request body."""
    logger = logging.getLogger(BOLT_LOGGER)
    # Bolt otherwise copies the root level onto its loggers when the app is built, so at INFO
    # it logs a refused request's whole body; this level is copied instead, whatever the root's.
    logger.setLevel(logging.WARNING)
    if not any(isinstance(f, WithholdBodies) for f in logger.filters):
        logger.addFilter(WithholdBodies())
    return logger
