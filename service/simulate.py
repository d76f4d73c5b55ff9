"""A day brought to life: tourists book and visit over HTTP, gates scan them in and out.

It drives a running tidegate as many phones and gate devices would: tourists register (the
code read from the outbox, as a gateway would), hold and confirm places in today's slots;
each party arrives at a random moment inside its slot, shows a fresh ticket at an entry
gate, stays about the site's average stay, and leaves through an exit gate. Time is the
service's own (`TIDEGATE_CLOCK_SPEED` makes a day pass in minutes), read from its answers.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from typing import Any

import httpx

from booking.ids import make_resident_id

PASSWORD = "simulated visitor 2026"
REGION = "110105"  # Beijing, Chaoyang: the ID numbers are made up, their check digits right


@dataclass
class Visit:
    site: str
    reservation_id: str
    tourist: dict[str, str]
    party: int
    arrive_at: datetime
    stay: timedelta
    state: str = "booked"  # booked, inside, left
    left_at: datetime | None = None


@dataclass
class Totals:
    booked: int = 0
    booked_at_release: int = 0
    entered: int = 0
    left: int = 0
    held_at_gate: int = 0
    refused: dict[str, int] = field(default_factory=dict)


class Simulation:
    def __init__(
        self,
        client: httpx.AsyncClient,
        *,
        admin_token: str,
        gate_tokens: dict[str, str],
        seed: int = 2026,
    ) -> None:
        self._client = client
        self._admin = {"Authorization": f"Bearer {admin_token}"}
        self._gate_tokens = gate_tokens
        self._random = random.Random(seed)
        self.visits: list[Visit] = []
        self.totals = Totals()
        self._gates: dict[str, dict[str, list[str]]] = {}
        self._stays: dict[str, int] = {}
        self._codes: dict[str, str] = {}
        self._rush: list[tuple[dict[str, str], str]] = []
        self.release: tuple[datetime, str] | None = None  # the next release: when, which day
        self._closes: dict[str, time] = {}
        self._outbox_seen = 0

    # setting up ----------------------------------------------------------------------------

    async def prepare(self, sites: Sequence[str], tourists: int, at_release: int = 0) -> None:
        """Register tourists and book today's slots at the given sites; `at_release` more
        tourists wait for the next release of places and all book in its first second."""
        catalog = (await self._client.get("/v1/sites")).json()
        by_id = {site["id"]: site for site in catalog}
        for site_id in sites:
            site = by_id[site_id]
            self._stays[site_id] = site["average_stay_minutes"]
            self._closes[site_id] = time.fromisoformat(site["closes"])
            gates = [g for g in site["gates"] if g["id"] in self._gate_tokens]
            self._gates[site_id] = {
                "entry": [g["id"] for g in gates if g["direction"] in ("entry", "both")],
                "exit": [g["id"] for g in gates if g["direction"] in ("exit", "both")],
            }
        await self._skip_old_codes()
        run = uuid.uuid4().hex[:8]  # a day may be simulated again on the same data
        for n in range(tourists):
            tourist = await self._register(f"sim{n}.{run}@example.com")
            await self._book(tourist, sites[n % len(sites)])
        if at_release:
            self.release = await self._next_release(sites)
            for n in range(at_release):
                tourist = await self._register(f"rush{n}.{run}@example.com")
                self._rush.append((tourist, sites[n % len(sites)]))

    async def _next_release(self, sites: Sequence[str]) -> tuple[datetime, str] | None:
        """The next moment a day goes on sale at one of the sites, and that day."""
        now = await self.service_now(sites[0])
        found: list[tuple[datetime, str]] = []
        for site in sites:
            today = (await self._client.get(f"/v1/sites/{site}")).json()["today"]["date"]
            for offset in range(1, 15):
                day = (datetime.fromisoformat(today) + timedelta(days=offset)).date().isoformat()
                slots = (
                    await self._client.get(f"/v1/sites/{site}/slots", params={"date": day})
                ).json()
                opens = [datetime.fromisoformat(s["sales_open_at"]) for s in slots]
                found += [(at, day) for at in opens if at > now]
        return min(found) if found else None

    async def _skip_old_codes(self) -> None:
        while True:
            sent = await self._client.get(
                "/v1/outbox",
                params={"topic": "account.verification", "after": self._outbox_seen, "limit": 500},
                headers=self._admin,
            )
            events = sent.json()
            if not events:
                return
            self._outbox_seen = events[-1]["id"]

    async def _register(self, email: str) -> dict[str, str]:
        answer = await self._client.post(
            "/v1/accounts", json={"email": email, "password": PASSWORD}
        )
        answer.raise_for_status()
        tourist = {"Authorization": f"Bearer {answer.json()['token']}"}
        sent = await self._client.get(
            "/v1/outbox", params={"topic": "account.verification"}, headers=self._admin
        )
        code = next(
            e["payload"]["code"] for e in reversed(sent.json()) if e["payload"]["to"] == email
        )
        verified = await self._client.post(
            "/v1/accounts/verify", json={"code": code}, headers=tourist
        )
        verified.raise_for_status()
        return tourist

    async def _book(self, tourist: dict[str, str], site: str, day: str | None = None) -> int:
        """Hold and confirm places for a party; returns how many (0 when refused)."""
        params = {"date": day} if day else None
        slots = (await self._client.get(f"/v1/sites/{site}/slots", params=params)).json()
        party = self._random.choice((1, 1, 2, 2, 2, 3, 4))
        open_slots = [s for s in slots if s["on_sale"] and s["remaining"] >= party]
        if not open_slots:
            return 0
        slot = self._random.choice(open_slots)
        visitors = [self._visitor() for _ in range(party)]
        held = await self._client.post(
            "/v1/reservations",
            json={"slot_id": slot["id"], "visitors": visitors},
            headers=tourist,
        )
        if held.status_code != 201:
            self._count_refusal(held)
            return 0
        rid = held.json()["id"]
        (
            await self._client.post(f"/v1/reservations/{rid}/confirm", headers=tourist)
        ).raise_for_status()
        start = datetime.fromisoformat(slot["start"])
        end = datetime.fromisoformat(slot["end"])
        arrive = start + (end - start) * self._random.random()
        average = self._stays[site]
        minutes = max(self._random.gauss(average, average / 4), 10)
        self.visits.append(Visit(site, rid, tourist, party, arrive, timedelta(minutes=minutes)))
        self.totals.booked += party
        return party

    def _visitor(self) -> dict[str, str]:
        born = datetime(1950, 1, 1) + timedelta(days=self._random.randrange(60 * 365))
        number = make_resident_id(REGION, born.date(), self._random.randrange(1000))
        return {"name": "Simulated Visitor", "id_type": "resident_id", "id_number": number}

    # running -------------------------------------------------------------------------------

    async def service_now(self, site: str) -> datetime:
        answer = await self._client.get(f"/v1/sites/{site}/occupancy", headers=self._admin)
        answer.raise_for_status()
        return datetime.fromisoformat(answer.json()["at"])

    async def step(self, now: datetime) -> None:
        """Let in every party whose time has come, and out every one whose stay is over; at
        the release, the waiting tourists all book at once."""
        if self._rush and self.release is not None and now >= self.release[0]:
            rush, self._rush = self._rush, []
            day = self.release[1]
            booked = await asyncio.gather(*(self._book(t, site, day) for t, site in rush))
            self.totals.booked_at_release += sum(booked)
        for visit in self.visits:
            if visit.state == "booked" and visit.arrive_at <= now:
                if await self._pass(visit, "entry"):
                    visit.state = "inside"
                    # Nobody stays past closing.
                    here = visit.arrive_at  # in the site's own time
                    closing = datetime.combine(
                        here.date(), self._closes[visit.site], tzinfo=here.tzinfo
                    )
                    visit.left_at = min(now + visit.stay, closing)
                    self.totals.entered += visit.party
            elif (
                visit.state == "inside"
                and visit.left_at is not None
                and visit.left_at <= now
                and await self._pass(visit, "exit")
            ):
                visit.state = "left"
                self.totals.left += visit.party

    async def _pass(self, visit: Visit, direction: str) -> bool:
        gates = self._gates[visit.site][direction]
        if not gates:
            return False
        ticket = await self._client.get(
            f"/v1/reservations/{visit.reservation_id}/ticket", headers=visit.tourist
        )
        if ticket.status_code != 200:
            self._count_refusal(ticket)
            visit.state = "left"  # no-show or closed: nothing more to do for this party
            return False
        gate = self._random.choice(gates)
        scanned = await self._client.post(
            f"/v1/gates/{gate}/scans",
            json={"code": ticket.json()["code"], "direction": direction},
            headers={"Authorization": f"Bearer {self._gate_tokens[gate]}"},
        )
        if scanned.status_code == 200:
            return True
        if scanned.json().get("code") == "site-full":
            self.totals.held_at_gate += visit.party  # waits at the gate, tries again
            return False
        self._count_refusal(scanned)
        visit.state = "left"
        return False

    def _count_refusal(self, answer: httpx.Response) -> None:
        code = answer.json().get("code", str(answer.status_code))
        self.totals.refused[code] = self.totals.refused.get(code, 0) + 1

    async def run(
        self,
        *,
        seconds: float,
        tick: float = 0.5,
        report: Callable[[datetime, Totals], Any] | None = None,
    ) -> Totals:
        """Step for `seconds` of wall time (the service's clock may run faster)."""
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        site = self.visits[0].site if self.visits else next(iter(self._gates))
        while loop.time() < end:
            now = await self.service_now(site)
            await self.step(now)
            if report is not None:
                report(now, self.totals)
            if all(v.state == "left" for v in self.visits):
                break
            await asyncio.sleep(tick)
        return self.totals
