"""Structured logging for every process: key=value on a terminal, JSON lines elsewhere.

Modules log through the standard library (``logging.getLogger(__name__)``) and pass fields in
``extra=``; one formatter renders them, so librdkafka's lines and ours look alike.
"""

from __future__ import annotations

import logging
import sys

import structlog

_SHARED = [
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def setup_logging(level: str, fmt: str | None = None) -> None:
    """Configure the root logger once per process, from the process's settings.

    ``fmt`` is ``console`` or ``json``; by default JSON when stderr is not a terminal, which is
    what log shippers in front of worker processes expect.
    """
    level = level.upper()
    fmt = fmt or ("console" if sys.stderr.isatty() else "json")
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=_SHARED,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic narrates every plugin it loads at INFO, on every worker start.
    logging.getLogger("alembic").setLevel(max(root.level, logging.WARNING))
