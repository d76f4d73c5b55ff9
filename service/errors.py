"""Every error leaves as RFC 9457 problem details, rendered here and nowhere else."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic_core import to_jsonable_python
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, ProgrammingError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from capacity.errors import TidegateError
from service.access import methods_at
from service.metrics import REFUSALS

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"

_HTTP_CODES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-failed",
    429: "rate-limited",
}


def problem(
    *,
    status: int,
    code: str,
    title: str,
    detail: str | None = None,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"urn:tidegate:problem:{code}",
        "title": title,
        "status": status,
        "code": code,
    }
    if detail:
        body["detail"] = detail
    if instance:
        body["instance"] = instance
    body.update(extra)
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def field_errors(errors: Sequence[Any]) -> list[dict[str, str]]:
    """Name the field and the rule of every validation error; never echo the input (it may
    be an ID number)."""
    rendered = []
    for error in errors:
        location = list(error.get("loc", ()))
        where = str(location.pop(0)) if location and location[0] in _PLACES else "body"
        if error["type"] == "json_invalid":
            location = []  # the location is a character offset, not a field
        field = ""
        for part in location:
            field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
        rendered.append(
            {"in": where, "field": field or where, "rule": error["type"], "message": error["msg"]}
        )
    return rendered


_PLACES = {"body", "query", "path", "header", "cookie"}


async def _domain(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, TidegateError)
    REFUSALS.labels(error.code).inc()
    return problem(
        status=error.status,
        code=error.code,
        title=error.title,
        detail=error.detail,
        instance=request.url.path,
        headers=error.headers or None,
        **to_jsonable_python(error.extra),
    )


def validation_problem(errors: list[dict[str, str]], *, instance: str) -> JSONResponse:
    """422 naming the field and the rule of each error (`field_errors`' shape)."""
    REFUSALS.labels("validation-failed").inc()
    first = errors[0] if errors else {"field": "body", "rule": "invalid", "message": "invalid"}
    return problem(
        status=422,
        code="validation-failed",
        title="The request is not valid",
        detail=f"{first['field']}: {first['message']} ({first['rule']})",
        instance=instance,
        errors=errors,
    )


async def _validation(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return validation_problem(field_errors(error.errors()), instance=request.url.path)


# FastAPI's answer to a body json.loads could not decode (not UTF-8, nested too deep): the
# same refusal as any other body that is not JSON, 422 naming the rule.
_UNPARSABLE_BODY = "There was an error parsing the body"


async def _http(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400 and error.detail == _UNPARSABLE_BODY:
        return await _validation(
            request,
            RequestValidationError(
                [
                    {
                        "type": "json_invalid",
                        "loc": ("body",),
                        "msg": "JSON decode error: the body is not UTF-8 JSON",
                    }
                ]
            ),
        )
    headers = dict(error.headers) if error.headers else {}
    if error.status_code == 405:
        headers["Allow"] = ", ".join(methods_at(request.url.path) or [headers.get("Allow", "")])
    code = _HTTP_CODES.get(error.status_code, "http-error")
    return problem(
        status=error.status_code,
        code=code,
        title=str(error.detail),
        detail=f"{request.method} {request.url.path}: {error.detail}",
        instance=request.url.path,
        headers=headers or None,
    )


# A database that is locked, restarting or unreachable: the booking was undone (its units went
# back to Redis), so the caller may simply try again. Anything else from the database (a
# constraint no rule foresaw, a bad statement) is a bug and stays a 500.
_DATABASE_BUGS = (IntegrityError, ProgrammingError, DataError)


async def _database(request: Request, error: Exception) -> JSONResponse:
    if isinstance(error, _DATABASE_BUGS):
        return await _unexpected(request, error)
    REFUSALS.labels("database-unavailable").inc()
    log.warning(
        "database unavailable on %s %s: %s",
        request.method,
        request.url.path,
        type(getattr(error, "orig", None) or error).__name__,
    )
    return problem(
        status=503,
        code="database-unavailable",
        title="The booking records cannot be written right now",
        detail="nothing was booked or changed: try again in a moment",
        instance=request.url.path,
        headers={"Retry-After": "1"},
    )


async def _unexpected(request: Request, error: Exception) -> JSONResponse:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return problem(
        status=500,
        code="internal-error",
        title="Something went wrong on our side",
        instance=request.url.path,
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(TidegateError, _domain)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(DBAPIError, _database)
    app.add_exception_handler(SQLAlchemyTimeoutError, _database)  # no pooled connection free
    app.add_exception_handler(Exception, _unexpected)


def problem_responses(*errors: type[TidegateError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route can answer."""
    responses: dict[int | str, dict[str, Any]] = {}
    for error in errors:
        entry = responses.setdefault(
            error.status, {"description": "", "content": {PROBLEM_JSON: {}}}
        )
        entry["description"] = ", ".join(filter(None, [entry["description"], error.code]))
    responses.setdefault(422, {"description": "validation-failed", "content": {PROBLEM_JSON: {}}})
    return responses
