"""The operators' dashboard: a page and its assets, shipped in the package (no CDN). The page
holds no data: it reads the live feed with the staff token the operator gives it."""

from __future__ import annotations

from importlib import resources

from fastapi import Depends, Response

from booking.errors import NotFound
from service import access
from service.access import ANYONE

router = access.router(tags=["operators"], dependencies=[Depends(ANYONE)])

ASSETS = {
    "dashboard.css": "text/css; charset=utf-8",
    "dashboard.js": "text/javascript; charset=utf-8",
}
# The page may only load its own assets and talk to its own origin.
POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


def _read(name: str) -> bytes:
    return resources.files("service").joinpath("static", name).read_bytes()


@router.get("/dashboard", include_in_schema=False)
async def dashboard() -> Response:
    """Every site at a glance: occupancy against both caps, alert colour, today's curve."""
    return Response(
        _read("dashboard.html"),
        media_type="text/html; charset=utf-8",
        headers={"Content-Security-Policy": POLICY, "Cache-Control": "no-cache"},
    )


@router.get("/dashboard/static/{name}", include_in_schema=False)
async def asset(name: str) -> Response:
    if name not in ASSETS:
        raise NotFound(f"no asset {name}")
    return Response(_read(name), media_type=ASSETS[name], headers={"Cache-Control": "no-cache"})
