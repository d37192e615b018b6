"""structlog set-up: JSON lines carrying the request id bound in context and the current span's
trace id and span id, with a level per logger (CHARTER_LOG_LEVELS, e.g. `infrastructure.stream=debug`)."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog
from opentelemetry import trace

from infrastructure.eventlog.availability import quiet_pool_logs

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}


def parse_levels(raw: str) -> dict[str, int]:
    """`name=level,other.name=level` into {logger name: level}; ValueError naming what is wrong."""
    levels: dict[str, int] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        name, sep, level = item.partition("=")
        if not sep or not name.strip() or level.strip().lower() not in LEVELS:
            raise ValueError(f"CHARTER_LOG_LEVELS: {item.strip()!r} is not logger=level (levels: {', '.join(LEVELS)})")
        levels[name.strip()] = LEVELS[level.strip().lower()]
    return levels


def level_of(name: str, default: int, levels: dict[str, int]) -> int:
    """The level of the most specific configured logger that is `name` or a parent of it."""
    while name:
        if name in levels:
            return levels[name]
        name = name.rpartition(".")[0]
    return default


class NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that knows its name (`structlog.get_logger(__name__)`), for per-logger levels."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name

    def msg(self, message: str) -> None:
        """One line, one write(2): lines of the worker processes sharing an output are never spliced into
        one another (print writes the text and its newline apart)."""
        with self._lock:
            try:
                self._file.flush()
                fd = self._file.fileno()
            except (AttributeError, OSError, ValueError):  # an in-memory file: print is whole already
                print(message, file=self._file, flush=True)
                return
            data = (message + "\n").encode("utf-8", "backslashreplace")
            while data:
                data = data[os.write(fd, data):]

    log = debug = info = warn = warning = fatal = failure = err = error = critical = exception = msg


def add_trace_ids(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`trace_id` and `span_id` of the current span (as exporters and trace viewers print them)."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event["trace_id"] = f"{ctx.trace_id:032x}"
        event["span_id"] = f"{ctx.span_id:016x}"
    return event


def add_process_id(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """`pid`: which process wrote the line (`charter serve --workers N` runs N of them on one output)."""
    event["pid"] = os.getpid()
    return event


def configure_logging(level: str = "info", json: bool = True, levels: str = "", *, file: TextIO | None = None) -> None:
    default = LEVELS.get(level.lower(), logging.INFO)
    per_logger = parse_levels(levels)
    out = file or sys.stderr

    def by_logger(logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        name = getattr(logger, "name", "")
        if per_logger and LEVELS.get(method, logging.INFO) < level_of(name, default, per_logger):
            raise structlog.DropEvent
        event.setdefault("logger", name)
        return event

    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    processors: list[Any] = [structlog.contextvars.merge_contextvars, structlog.processors.add_log_level, by_logger,
                             add_process_id, add_trace_ids, structlog.processors.TimeStamper(fmt="iso", utc=True), structlog.processors.format_exc_info, renderer]
    structlog.configure(
        processors=processors,
        # The cheap filter lets through what the most verbose logger wants; `by_logger` does the rest.
        wrapper_class=structlog.make_filtering_bound_logger(min([default, *per_logger.values()])),
        logger_factory=lambda *args: NamedPrintLogger(out, str(args[0]) if args else ""),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=logging.WARNING, stream=out, format="%(message)s")
    for name, value in per_logger.items():  # stdlib loggers too (asyncpg, nats, uvicorn, ...)
        logging.getLogger(name).setLevel(value)
    quiet_pool_logs()
