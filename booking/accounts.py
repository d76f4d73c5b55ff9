"""Accounts and bearer tokens.

Passwords are hashed with argon2; tokens are random and only their SHA-256 is stored, so a
copy of the database cannot be used to log in.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from booking import repository as repo
from booking.errors import InvalidRequest, NotFound, Unauthorized
from booking.models import Account, ApiToken, OutboxEvent, Registration
from booking.schemas import AccountCreate, AccountPublic, SessionCreate, TokenPublic
from capacity.clock import Clock

PENDING = "pending"  # a registration's token until its code comes back
ROLES = ("tourist", "admin", "manager", "operator", "gate")

VERIFICATION = "account.verification"
REGISTRATION_ATTEMPT = "account.registration_attempt"
CODE_DIGITS = 6
CODE_ATTEMPTS = 5  # wrong codes before a registration must start again

# A dummy hash to verify against when the login is unknown, so both answers take as long.
# OWASP's argon2id setting (19 MiB, 2 passes, 1 lane): a login costs tens of milliseconds, not
# hundreds, so the 20:00 rush of logins does not starve the booking path of CPU.
_passwords = PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)
_DUMMY_HASH = _passwords.hash("not a real password")


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: a tourist's account, or a staff token with a role and sites."""

    token_hash: str
    role: str
    account_id: str | None
    sites: tuple[str, ...] = ()
    gate: str | None = None

    @property
    def actor(self) -> str:
        return self.account_id or f"token:{self.token_hash[:12]}"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _code_hash(registration_id: str, code: str) -> str:
    return hashlib.sha256(f"{registration_id}:{code}".encode()).hexdigest()


def token_id(token_hash: str) -> str:
    """The public name of a token (to list or revoke it): a prefix of its hash, never the
    token itself."""
    return token_hash[:16]


class Accounts:
    def __init__(
        self,
        *,
        sessions: async_sessionmaker[AsyncSession],
        clock: Clock,
        token_ttl: timedelta,
        cache_seconds: float = 10.0,
        code_ttl: timedelta = timedelta(minutes=15),
    ) -> None:
        self._code_ttl = code_ttl
        self._sessions = sessions
        self._clock = clock
        self._token_ttl = token_ttl
        # A short per-process cache keeps the booking path free of a token query per request;
        # a revoked token stops working within `cache_seconds` on every replica.
        self._cache_seconds = cache_seconds
        self._cache: dict[str, tuple[float, Principal, datetime]] = {}

    async def register(self, body: AccountCreate) -> TokenPublic:
        """Start a registration: answers a bearer token at once (role "pending") and sends a
        one-time code to the email or phone (an outbox event); `verify` with that code makes
        the account, and the same token becomes the tourist's.

        The answer is the same whether or not the login has an account: a taken login gets a
        pending token too, but no code (its owner is told someone tried), so it can never be
        verified. Registering tells nobody which logins exist.
        """
        channel, login = body.login
        password_hash = await asyncio.to_thread(_passwords.hash, body.password)
        now = self._clock.now()
        expires_at = now + self._code_ttl
        code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        async with self._sessions() as session, session.begin():
            token = await self._issue(
                session, account_id=None, role=PENDING, ttl=self._code_ttl, label="registration"
            )
            registration = Registration(
                id=secrets.token_hex(16),
                token_hash=hash_token(token.token),
                login=login,
                channel=channel,
                password_hash=password_hash,
                code_hash="",
                created_at=now,
                expires_at=expires_at,
            )
            registration.code_hash = _code_hash(registration.id, code)
            session.add(registration)
            account = await repo.account_by_login(session, channel, login)
            if account is None:
                payload = {"channel": channel, "to": login, "code": code}
                event = OutboxEvent(
                    at=now,
                    topic=VERIFICATION,
                    payload={**payload, "expires_at": expires_at.isoformat()},
                )
            else:
                # The code is never sent: this registration can never be verified.
                event = OutboxEvent(
                    at=now,
                    topic=REGISTRATION_ATTEMPT,
                    account_id=account.id,
                    payload={"channel": channel, "to": login},
                )
            session.add(event)
        return token

    async def verify(self, principal: Principal, code: str) -> AccountPublic:
        """Make the account of the registration whose token this is, if the code matches."""
        now = self._clock.now()
        account_id: str | None = None
        async with self._sessions() as session, session.begin():
            registration = await repo.registration_by_token(session, principal.token_hash)
            if (
                registration is not None
                and registration.expires_at > now
                and registration.attempts < CODE_ATTEMPTS
            ):
                if not hmac.compare_digest(
                    registration.code_hash, _code_hash(registration.id, code)
                ):
                    registration.attempts += 1
                elif (
                    await repo.account_by_login(session, registration.channel, registration.login)
                    is None
                ):
                    account = Account(
                        id=secrets.token_hex(16),
                        password_hash=registration.password_hash,
                        created_at=now,
                        **{registration.channel: registration.login},
                    )
                    await repo.add_account(session, account)
                    await repo.drop_registrations(session, registration.login)
                    await repo.upgrade_token(
                        session, principal.token_hash, account.id, now + self._token_ttl
                    )
                    account_id = account.id
        if account_id is None:
            # One answer for a wrong, expired, used-up or never-sent code.
            raise InvalidRequest(
                field="code", rule="valid-code", message="the code is wrong or has expired"
            )
        self._cache.pop(principal.token_hash, None)
        return AccountPublic(account_id=account_id, verified=True)

    async def login(self, body: SessionCreate) -> TokenPublic:
        field, value = body.login
        async with self._sessions() as session:
            account = await repo.account_by_login(session, field, value)
        stored = account.password_hash if account else _DUMMY_HASH
        try:
            await asyncio.to_thread(_passwords.verify, stored, body.password)
        except VerificationError:
            account = None
        if account is None:
            raise Unauthorized("wrong login or password")
        async with self._sessions() as session, session.begin():
            return await self._issue(session, account_id=account.id, role="tourist")

    async def create_staff_token(
        self,
        *,
        role: str,
        sites: list[str],
        gate: str | None = None,
        label: str = "",
        ttl: timedelta | None = None,
    ) -> TokenPublic:
        if role not in ROLES or role == "tourist":
            raise InvalidRequest(field="role", rule="staff-role", message=f"no staff role {role}")
        async with self._sessions() as session, session.begin():
            for site in sites:
                if await repo.get_site(session, site) is None:
                    raise InvalidRequest(
                        field="sites", rule="known-site", message=f"no site {site}"
                    )
            if gate is not None:
                row = await repo.get_gate(session, gate)
                if row is None:
                    raise InvalidRequest(field="gate", rule="known-gate", message=f"no gate {gate}")
                # A gate device scans at one gate of one site: its scope is that site.
                sites = [row.site_id]
            return await self._issue(
                session, account_id=None, role=role, sites=sites, gate=gate, label=label, ttl=ttl
            )

    async def revoke(self, token_id: str) -> None:
        """Stop a token at once in this process (other replicas: within `cache_seconds`)."""
        async with self._sessions() as session, session.begin():
            revoked = await repo.revoke_token(session, token_id, self._clock.now())
        if not revoked:
            raise NotFound(f"no active token {token_id}")
        for token_hash in revoked:
            self._cache.pop(token_hash, None)

    async def authenticate(self, token: str) -> Principal:
        token_hash = hash_token(token)
        now = self._clock.now()
        cached = self._cache.get(token_hash)
        if cached is not None and cached[0] > time.monotonic() and cached[2] > now:
            return cached[1]
        async with self._sessions() as session:
            row = await repo.get_token(session, token_hash)
        # The row was found by its hash; comparing again in constant time costs nothing and
        # keeps any index or cache lookup from being the only comparison a token ever meets.
        known = row is not None and hmac.compare_digest(row.token_hash, token_hash)
        if row is None or not known or row.revoked_at is not None or row.expires_at <= now:
            self._cache.pop(token_hash, None)
            raise Unauthorized("the token is unknown, expired or revoked")
        principal = Principal(
            token_hash=token_hash,
            role=row.role,
            account_id=row.account_id,
            sites=tuple(row.sites),
            gate=row.gate,
        )
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[token_hash] = (
            time.monotonic() + self._cache_seconds,
            principal,
            row.expires_at,
        )
        return principal

    async def _issue(
        self,
        session: AsyncSession,
        *,
        account_id: str | None,
        role: str,
        sites: list[str] | None = None,
        gate: str | None = None,
        label: str = "",
        ttl: timedelta | None = None,
    ) -> TokenPublic:
        token = secrets.token_urlsafe(32)
        now = self._clock.now()
        expires_at = now + (ttl or self._token_ttl)
        await repo.add_token(
            session,
            ApiToken(
                token_hash=hash_token(token),
                account_id=account_id,
                role=role,
                sites=sites or [],
                gate=gate,
                label=label,
                created_at=now,
                expires_at=expires_at,
            ),
        )
        return TokenPublic(
            id=token_id(hash_token(token)),
            token=token,
            expires_at=expires_at,
            account_id=account_id,
            role=role,
            sites=sites or [],
            gate=gate,
        )
