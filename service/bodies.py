"""Bodies of writes: JSON only (415 otherwise) and small (413 past the limit), refused before
routing so that nothing is parsed or done for them. A plain ASGI middleware: it costs a header
lookup on the booking path, not a request object."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.errors import problem

WRITES = {b"POST", b"PUT", b"PATCH"}


class BodyRules:
    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"].encode() not in WRITES:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        length = headers.get(b"content-length")
        media = headers.get(b"content-type", b"").split(b";", 1)[0].strip().lower()
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = problem(
                status=413,
                code="payload-too-large",
                title="The request body is too large",
                detail=f"at most {self.max_bytes} bytes",
                instance=scope["path"],
            )
        elif (length not in (None, b"0")) and not (
            media == b"application/json" or media.endswith(b"+json")
        ):
            response = problem(
                status=415,
                code="unsupported-media-type",
                title="Request bodies are JSON",
                detail="send Content-Type: application/json",
                instance=scope["path"],
            )
        else:
            await self.app(scope, self._limited(receive), send)
            return
        await response(scope, receive, send)

    def _limited(self, receive: Receive) -> Receive:
        """For bodies without a Content-Length (chunked): count while the app reads."""
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Rendered as problem+json by the app's own HTTP error handler.
                    raise HTTPException(413, "The request body is too large")
            return message

        return limited
