"""No NUL character in a path or a query: PostgreSQL's text cannot hold one, so a request that
carries one would reach the database only to fail there. Refused first with 422 naming the
parameter (bodies get the same rule from `booking.schemas.Strict`). A plain ASGI middleware:
a substring test on the booking path."""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from service.errors import validation_problem

NUL = "\x00"
RULE = "string_nul"
MESSAGE = "must not contain a NUL character"


class NoNulCharacters:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            where = _nul_in(scope)
            if where is not None:
                place, field = where
                error = {"in": place, "field": field, "rule": RULE, "message": MESSAGE}
                response = validation_problem([error], instance=scope["path"].replace(NUL, ""))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _nul_in(scope: Scope) -> tuple[str, str] | None:
    """Where a NUL is: ("path", "path") or ("query", the parameter's name)."""
    if NUL in scope["path"]:
        return "path", "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" not in query and b"\x00" not in query:
        return None
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if NUL in name or NUL in value:
            return "query", name.replace(NUL, "") or "query"
    return None
