"""Entry tickets and gate scans."""

from __future__ import annotations

import io
from typing import Annotated, Literal

import segno
from fastapi import Depends, Query, Response

from booking.errors import (
    AlreadyEntered,
    Forbidden,
    NotConfirmed,
    NotFound,
    NotInside,
    OutsideEntryWindow,
    TicketExpired,
    TicketInvalid,
    Unauthorized,
    UnknownVisitor,
    WrongGateDirection,
    WrongSite,
)
from booking.gates import Scan
from booking.schemas import OccupancyPublic, ScanRequest, ScanResult, TicketPublic
from capacity.errors import CapacityUnavailable
from capacity.occupancy import SiteFull
from service import access
from service.access import GateDeviceDep, SiteStaffDep, TouristDep
from service.deps import RuntimeDep
from service.errors import problem_responses
from service.throttling import READS

router = access.router(prefix="/v1", tags=["gates"])

IMAGE_TYPES = {"svg": "image/svg+xml", "png": "image/png"}


@router.get(
    "/reservations/{reservation_id}/ticket",
    response_model=TicketPublic,
    responses={
        **problem_responses(Unauthorized, NotFound, NotConfirmed),
        200: {"content": {"image/svg+xml": {}, "image/png": {}}, "description": "The code"},
    },
    dependencies=[Depends(READS)],
)
async def ticket(
    reservation_id: str,
    runtime: RuntimeDep,
    tourist: TouristDep,
    image: Annotated[
        Literal["json", "svg", "png"],
        Query(alias="format", description="json, or the QR code as an SVG or PNG image"),
    ] = "json",
) -> TicketPublic | Response:
    """A rotating entry code for one's own confirmed reservation, valid about a minute."""
    assert tourist.account_id is not None
    issued = await runtime.gates.ticket(owner_id=tourist.account_id, reservation_id=reservation_id)
    if image == "json":
        return issued
    qr = segno.make(issued.code, error="m")
    out = io.BytesIO()
    qr.save(out, kind=image, scale=6, border=4)
    return Response(
        out.getvalue(),
        media_type=IMAGE_TYPES[image],
        headers={"Cache-Control": "no-store", "X-Ticket-Expires-At": issued.expires_at.isoformat()},
    )


@router.post(
    "/gates/{gate_id}/scans",
    response_model=ScanResult,
    responses=problem_responses(
        Unauthorized,
        Forbidden,
        NotFound,
        TicketInvalid,
        TicketExpired,
        WrongSite,
        NotConfirmed,
        OutsideEntryWindow,
        AlreadyEntered,
        NotInside,
        UnknownVisitor,
        WrongGateDirection,
        SiteFull,
        CapacityUnavailable,
    ),
)
async def scan(
    gate_id: str, body: ScanRequest, runtime: RuntimeDep, device: GateDeviceDep
) -> ScanResult:
    """An entry or an exit at this gate, for the whole party or the named visitors. Every
    scan is logged, admitted or refused, with its reason. At the instantaneous cap an entry
    answers `409 site-full`: hold the visitors (they keep their reservation) until exits
    make room."""
    return await runtime.gates.scan(
        Scan(gate_id=gate_id, code=body.code, direction=body.direction, positions=body.visitors)
    )


@router.get(
    "/sites/{site_id}/occupancy",
    response_model=OccupancyPublic,
    responses=problem_responses(Unauthorized, Forbidden, NotFound, CapacityUnavailable),
)
async def occupancy(site_id: str, runtime: RuntimeDep, staff: SiteStaffDep) -> OccupancyPublic:
    """People inside the site now against its instantaneous cap, and each gate's flow
    (admins, and the site's managers and operators)."""
    return await runtime.gates.occupancy(site_id)
