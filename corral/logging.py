"""structlog set-up: key-value events, console on a terminal, JSON lines otherwise."""

from __future__ import annotations

import logging
import os
import sys

import structlog


def configure(level: str | None = None, *, json: bool | None = None) -> None:
    """Configure structlog and route stdlib logging (kazoo, grpc) through it."""
    name = (level or os.environ.get("CORRAL_LOG_LEVEL") or "info").upper()
    numeric = logging.getLevelName(name)
    if not isinstance(numeric, int):
        numeric = logging.INFO
    use_json = (not sys.stderr.isatty()) if json is None else json
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(numeric, logging.INFO))


def default_to_stderr() -> None:
    """Unless the program configured structlog itself, log key-value lines to
    stderr (level: ``CORRAL_LOG_LEVEL``, default info). structlog's own default
    prints to stdout, where a framework's output goes; the SDK calls this so
    its events never mix with it. Leaves the stdlib's logging alone."""
    if structlog.is_configured():
        return
    name = (os.environ.get("CORRAL_LOG_LEVEL") or "info").upper()
    numeric = logging.getLevelName(name)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            numeric if isinstance(numeric, int) else logging.INFO
        ),
        logger_factory=_StderrLogger,
    )


class _StderrLogger:
    """Writes to whatever ``sys.stderr`` is at the time of the call, not at
    set-up: a program (or a test runner) may swap it later."""

    def __init__(self, *_args: object) -> None:
        pass

    def msg(self, message: str) -> None:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

    log = debug = info = warn = warning = error = err = critical = fatal = exception = failure = msg
