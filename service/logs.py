"""Logs: one JSON object a line on stderr, from every logger in the process (ours, uvicorn's
and its access log, the libraries'), each line carrying the id of the request being served.

The standard library's `logging` stays the one pipeline: modules keep their
`logging.getLogger(__name__)`, and structlog's `ProcessorFormatter` turns each record into
JSON at the single stderr handler. `RequestIds` binds the request id in a context variable
for the duration of a request; `merge_contextvars` puts it on every line written meanwhile.
Request bodies are never logged: visitors' ID numbers must not reach a log collector.
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
import uuid
from enum import StrEnum
from typing import Any, Literal

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from structlog.typing import EventDict, Processor, WrappedLogger


class LogFormat(StrEnum):
    json = "json"  # for log collectors: the default
    text = "text"  # for a developer's terminal


LogLevel = Literal["debug", "info", "warning", "error"]

REQUEST_ID_HEADER = b"x-request-id"
# What a caller (a load balancer, a gate device) may give as its own request id; anything else
# is replaced, so that a log line can never be forged or broken by a header.
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")


def _access_fields(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """uvicorn's access line as fields too; and none of the records' leftovers."""
    arguments = event_dict.pop("positional_args", ())
    event_dict.pop("color_message", None)  # uvicorn's copy of a message with ANSI colours
    if event_dict.get("logger") == "uvicorn.access" and len(arguments) == 5:
        client, method, path, http_version, status = arguments
        event_dict.update(
            client=client, method=method, path=path, http_version=http_version, status=status
        )
    return event_dict


def _shared() -> list[Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]


def formatter(log_format: LogFormat = LogFormat.json) -> structlog.stdlib.ProcessorFormatter:
    """The formatter of the stderr handler. Named in `config()` as a factory, so that every
    process uvicorn starts (`--workers`) builds it, and structlog's own loggers, for itself."""
    _configure_structlog()
    rendering: list[Processor] = (
        [structlog.processors.format_exc_info, structlog.processors.JSONRenderer()]
        if log_format == LogFormat.json
        else [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared(), structlog.stdlib.ExtraAdder(), _access_fields],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
        pass_foreign_args=True,
    )


def _configure_structlog() -> None:
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *_shared(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def config(level: LogLevel = "info", log_format: LogFormat = LogFormat.json) -> dict[str, Any]:
    """A `logging.config.dictConfig` dictionary: one stderr handler on the root logger, which
    uvicorn's loggers reach instead of their own text handlers."""
    threshold = logging.getLevelNamesMapping()[level.upper()]
    return {
        "version": 1,
        "disable_existing_loggers": False,  # modules made their loggers on import
        "formatters": {"structured": {"()": formatter, "log_format": log_format}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "structured",
            }
        },
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            **{
                name: {"level": level.upper(), "handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            # A line per SQLite call, with its parameters: never wanted, even at debug.
            "aiosqlite": {"level": logging.getLevelName(max(threshold, logging.INFO))},
        },
    }


def configure(level: LogLevel = "info", log_format: LogFormat = LogFormat.json) -> None:
    """Send every log line of this process to stderr, as configured by `config()`."""
    logging.config.dictConfig(config(level, log_format))


def request_id_of(headers: list[tuple[bytes, bytes]]) -> str:
    """The caller's X-Request-ID if it is a sane token, otherwise a new one."""
    for name, value in headers:
        if name.lower() == REQUEST_ID_HEADER:
            if _SANE_REQUEST_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return uuid.uuid4().hex


class RequestIds:
    """A plain ASGI middleware: each HTTP request gets an id (the caller's `X-Request-ID` if
    sane, a new one otherwise), bound to every log line written while it is served and
    returned in the answer's `X-Request-ID` header."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_of(scope["headers"])
        raw = request_id.encode("ascii")

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() != REQUEST_ID_HEADER
                ]
                message = {**message, "headers": [*headers, (REQUEST_ID_HEADER, raw)]}
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        await self.app(scope, receive, send_with_id)
        # Unbound only after a normal end. After an error the server still logs it, in this
        # request's own task (uvicorn runs one per request), and that line is the request's.
        structlog.contextvars.reset_contextvars(**tokens)
