"""structlog setup: readable lines on a terminal, JSON lines under systemd or when piped."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

# Keys whose values must never reach a log line, whatever a caller binds by mistake.
_SECRET_KEYS = {"secret", "client_secret", "password", "token", "access_token", "authorization", "assertion"}


def _redact(_logger: Any, _name: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key in list(event):
        if key.lower() in _SECRET_KEYS:
            event[key] = "[redacted]"
    return event


def setup_logging(level: str = "info", fmt: str = "auto", stream: Any = None) -> None:
    explicit = stream
    stream = stream or sys.stderr
    if fmt == "auto":
        under_systemd = bool(os.environ.get("JOURNAL_STREAM") or os.environ.get("INVOCATION_ID"))
        fmt = "console" if stream.isatty() and not under_systemd else "json"
    renderer: Any = (
        structlog.processors.JSONRenderer() if fmt == "json" else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    logging.basicConfig(level=logging.WARNING, stream=stream, format="%(levelname)s %(name)s: %(message)s")
    # The SDK and HTTP stacks log request URLs with tokens in query strings at debug: keep them quiet.
    for noisy in ("httpx", "httpcore", "msal", "urllib3", "kiota_http", "azure"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # Resolve stderr when a logger is made, not now: tests and embedders swap sys.stderr.
        logger_factory=(lambda *_: structlog.PrintLogger(explicit or sys.stderr)),
        cache_logger_on_first_use=False,
    )
