"""structlog set-up: JSON lines when not on a terminal, readable lines on one.

Formats (`--log-format`): `json` (one JSON object a line, for log collectors), `text`
(readable `key=value` lines; coloured only on a terminal), `console` (the same as `text`)
and `auto` (`text` on a terminal, else `json`).
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR}
LOG_LEVELS = tuple(_LEVELS)
LOG_FORMATS = ("json", "text", "console", "auto")


def check_log_level(value: str) -> str:
    """`value` lower-cased when it is a level `configure_logging` accepts; else ValueError."""
    level = value.strip().lower()
    if level not in _LEVELS:
        raise ValueError(f"unknown log level {value[:40]!r}; use one of {', '.join(_LEVELS)}")
    return level


def check_log_format(value: str) -> str:
    """`value` lower-cased when it is one of LOG_FORMATS; else ValueError."""
    fmt = value.strip().lower()
    if fmt not in LOG_FORMATS:
        raise ValueError(f"unknown log format {value[:40]!r}; use one of {', '.join(LOG_FORMATS)}")
    return fmt


def configure_logging(level: str = "info", fmt: str = "auto") -> None:
    """Configure structlog for the whole process; call once from a process's entry point."""
    numeric = _LEVELS[check_log_level(level)]
    fmt = check_log_format(fmt)
    if fmt == "auto":
        fmt = "text" if sys.stderr.isatty() else "json"
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
    else:  # text, console
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str, **bound: Any) -> Any:
    """A structlog logger carrying `component=name` and any other bound values.

    The logger is a lazy proxy: module-level loggers made at import time pick up the
    configuration that `configure_logging` sets later.
    """
    return structlog.get_logger(component=name, **bound)
