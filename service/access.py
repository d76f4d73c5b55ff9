"""Who may call what. Every route names one policy as a dependency; a test fails for any
route that does not, and the policy's name is published in the OpenAPI as `x-access`.

Site scope, one rule everywhere: a staff token acting on a site outside its scope is answered
`403 forbidden` (the catalog is public, so hiding a site's existence behind a 404 would protect
nothing). A tourist asking for somebody else's reservation or waitlist entry is answered
`404 not-found`, as if it did not exist: they are private.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.dependencies.models import Dependant
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from booking.accounts import PENDING, Principal
from booking.catalog import parse_slot_id
from booking.errors import AccountUnverified, Forbidden, NotFound, Unauthorized
from service.runtime import Runtime

_bearer = HTTPBearer(auto_error=False, description="A token from POST /v1/sessions or /v1/tokens")
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


class Policy:
    """A route's answer to "who may call me": also the dependency that enforces it."""

    def __init__(self, name: str, roles: frozenset[str], *, account: bool = False) -> None:
        self.name = name
        self.roles = roles
        self.account = account

    async def __call__(self, request: Request, credentials: BearerDep) -> Principal:
        if credentials is None:
            raise Unauthorized("send Authorization: Bearer <token>")
        # The runtime straight from the app, not through another dependency: every dependency
        # FastAPI resolves costs time on the booking path.
        runtime: Runtime = request.app.state.runtime
        principal = await runtime.accounts.authenticate(credentials.credentials)
        if principal.role not in self.roles or (self.account and principal.account_id is None):
            if principal.role == PENDING:
                raise AccountUnverified("POST /v1/accounts/verify with the code first")
            raise Forbidden(f"this route is for {self.name}")
        return principal

    def __repr__(self) -> str:
        return f"Policy({self.name})"


class Public(Policy):
    """Anyone, without a token."""

    async def __call__(self) -> None:  # type: ignore[override]
        return None


ANYONE = Public("anyone", frozenset())
TOURIST = Policy("a tourist's account", frozenset({"tourist"}), account=True)
REGISTRATION = Policy("a registration waiting for its code", frozenset({PENDING}))
ADMIN = Policy("admins", frozenset({"admin"}))
SITE_MANAGER = Policy("admins and the site's managers", frozenset({"admin", "manager"}))
GATE = Policy("the gate's own device", frozenset({"gate"}))
SITE_STAFF = Policy(
    "admins and the site's managers and operators", frozenset({"admin", "manager", "operator"})
)

TouristDep = Annotated[Principal, Depends(TOURIST)]
RegistrationDep = Annotated[Principal, Depends(REGISTRATION)]
AdminDep = Annotated[Principal, Depends(ADMIN)]
ManagerDep = Annotated[Principal, Depends(SITE_MANAGER)]


def ensure_site(principal: Principal, site_id: str) -> None:
    """Staff act only on their own sites (admins on all)."""
    if principal.role != "admin" and site_id not in principal.sites:
        raise Forbidden(f"this token is not for site {site_id}")


async def _manager_of_site(site_id: str, staff: ManagerDep) -> Principal:
    # A dependency, so the scope is checked before the body is read: a manager of another
    # site is told 403 whatever it sends, never what is wrong with its body.
    ensure_site(staff, site_id)
    return staff


async def _manager_of_slot(slot_id: str, staff: ManagerDep) -> Principal:
    ref = parse_slot_id(slot_id)
    if ref is None:
        raise NotFound(f"no slot {slot_id}")
    ensure_site(staff, ref.site_day.site)
    return staff


async def _device_of_gate(gate_id: str, device: Annotated[Principal, Depends(GATE)]) -> Principal:
    # A gate device scans at its own gate only (a token is one device at one gate).
    if device.gate != gate_id:
        raise Forbidden(f"this token is not for gate {gate_id}")
    return device


async def _staff_of_site(
    site_id: str, staff: Annotated[Principal, Depends(SITE_STAFF)]
) -> Principal:
    ensure_site(staff, site_id)
    return staff


SiteManagerDep = Annotated[Principal, Depends(_manager_of_site)]
SiteStaffDep = Annotated[Principal, Depends(_staff_of_site)]
GateDeviceDep = Annotated[Principal, Depends(_device_of_gate)]
SlotManagerDep = Annotated[Principal, Depends(_manager_of_slot)]


def policy_of(route: APIRoute) -> Policy | None:
    return _policy_in(route.dependant)


def _policy_in(dependant: Dependant) -> Policy | None:
    for dependency in dependant.dependencies:
        if isinstance(dependency.call, Policy):
            return dependency.call
        found = _policy_in(dependency)
        if found is not None:
            return found
    return None


class UndeclaredAccess(TypeError):
    """A route was written without saying who may call it."""


class DeclaredRoute(APIRoute):
    """The route class of every tidegate router: a route that names no policy cannot even be
    created, and the policy it names is published in the OpenAPI as `x-access`."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, endpoint, **kwargs)
        policy = policy_of(self)
        if policy is None:
            raise UndeclaredAccess(
                f"{sorted(self.methods or ())} {path} does not say who may call it: add a Policy "
                "dependency from service.access"
            )
        self.openapi_extra = {**(self.openapi_extra or {}), "x-access": policy.name}
        if self.body_field is not None:
            # Refused before routing by service.bodies, for every route with a body.
            self.responses.setdefault(413, {"description": "payload-too-large"})
            self.responses.setdefault(415, {"description": "unsupported-media-type"})
        self.query_names = _query_names(self.dependant)
        DECLARED.append(self)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        answer = super().get_route_handler()

        async def checked(request: Request) -> Response:
            # A misspelt parameter (`?limt=5`) would otherwise be dropped without a word and
            # the default used: refused like an unknown field of a body.
            unknown = sorted(set(request.query_params) - self.query_names)
            if unknown:
                raise RequestValidationError(
                    [
                        {
                            "type": "extra_forbidden",
                            "loc": ("query", unknown[0][:64]),
                            "msg": "Extra inputs are not permitted",
                        }
                    ]
                )
            return await answer(request)

        return checked


DECLARED: list[DeclaredRoute] = []


def methods_at(path: str) -> list[str]:
    """Every method some route answers at `path`, for the Allow header of a 405 (Starlette
    names only the first matching route's, and FastAPI makes one route per method)."""
    methods = {m for route in DECLARED if route.path_regex.match(path) for m in route.methods or ()}
    return sorted(methods)


def _query_names(dependant: Dependant) -> frozenset[str]:
    """The query parameters a route reads, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for dependency in dependant.dependencies:
        names |= _query_names(dependency)
    return frozenset(names)


def router(**kwargs: Any) -> APIRouter:
    """An APIRouter whose routes must declare their access policy."""
    return APIRouter(route_class=DeclaredRoute, **kwargs)
