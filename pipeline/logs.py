"""Log records as text, or with ``WMIWATCH_LOG_FORMAT=json`` as one JSON object per line."""

from __future__ import annotations

import logging.config
from typing import Any, Literal

LogFormat = Literal["text", "json"]
TEXT = "[%(asctime)s] [%(process)s] [%(levelname)s] %(name)s: %(message)s"
JSON = {
    "()": "pythonjsonlogger.json.JsonFormatter",
    "fmt": "%(asctime)s %(process)d %(levelname)s %(name)s %(message)s",
    "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
    "timestamp": False,
}


def logging_config(level: int | str, log_format: LogFormat) -> dict[str, Any]:
    """Return the ``logging.config.dictConfig`` of a process: one handler on stdout."""
    formatter = JSON if log_format == "json" else {"format": TEXT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"default": formatter},
        "handlers": {
            "default": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "stream": "ext://sys.stdout",
            }
        },
        "root": {"level": level, "handlers": ["default"]},
    }


def configure(level: int | str, log_format: LogFormat) -> None:
    """Send this process's log records to stdout in ``log_format``."""
    logging.config.dictConfig(logging_config(level, log_format))
