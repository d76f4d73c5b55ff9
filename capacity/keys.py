"""Every Redis key name tidegate uses, built in one place.

All keys of one site-day share the hash tag `{site:date}`, so each script touches a single
Redis Cluster slot, and no script ever touches two site-days (ARCHITECTURE §3).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date

PREFIX = "tg"


@dataclass(frozen=True, slots=True)
class SiteDay:
    """One site on one visit date: the unit of atomicity for admission."""

    site: str
    visit_date: date

    def __str__(self) -> str:
        return f"{self.site}:{self.visit_date.isoformat()}"

    @property
    def tag(self) -> str:
        return f"{PREFIX}:{{{self}}}"

    @property
    def epoch(self) -> str:
        """Present only while the counters were built from SQL (fail closed without it)."""
        return f"{self.tag}:epoch"

    @property
    def day(self) -> str:
        """Hash: cap, hwm (high-water mark), used, opens_at (ms), closed."""
        return f"{self.tag}:day"

    @property
    def day_free(self) -> str:
        """Sorted set of freed day units below the high-water mark."""
        return f"{self.tag}:day:free"

    @property
    def visitor_ids(self) -> str:
        """Set of keyed hashes of the ID numbers holding a place this site-day."""
        return f"{self.tag}:ids"

    @property
    def slot_index(self) -> str:
        """Sorted set of the day's slot keys, scored by start minute."""
        return f"{self.tag}:slots"

    @property
    def owners(self) -> str:
        """Hash account -> its active reservations this site-day (ids, space-separated)."""
        return f"{self.tag}:owners"

    @property
    def occupancy(self) -> str:
        """Hash: people inside now, and `built` once counted from SQL."""
        return f"{self.tag}:occupancy"

    @property
    def flow(self) -> str:
        """Hash "minute:gate:in|out" -> people through that gate in that minute of the day."""
        return f"{self.tag}:flow"

    @property
    def suspects(self) -> str:
        """Hash unit-or-id -> first seen (ms): Redis-only units the reconciler watches."""
        return f"{self.tag}:suspects"

    @property
    def day_returns(self) -> str:
        """Sorted set of refunded day places kept off sale, scored by when they come back."""
        return f"{self.tag}:day:returns"

    @property
    def rebuild_lock(self) -> str:
        return f"{self.tag}:rebuild-lock"

    def slot(self, slot_key: str) -> str:
        """Hash: cap, hwm, used, closes_at (ms), closed, and its pools (see room.lua)."""
        return f"{self.tag}:slot:{slot_key}"

    def slot_free(self, slot_key: str) -> str:
        return f"{self.tag}:slot:{slot_key}:free"

    def slot_returns(self, slot_key: str) -> str:
        """Sorted set of refunded places kept off sale, scored by when they come back."""
        return f"{self.tag}:slot:{slot_key}:returns"

    def allocation_keys(self, slot_key: str) -> list[str]:
        """The nine keys of allocate.lua and release.lua, in their order."""
        return [
            self.epoch,
            self.day,
            self.day_free,
            self.visitor_ids,
            self.slot(slot_key),
            self.slot_free(slot_key),
            self.owners,
            self.slot_returns(slot_key),
            self.day_returns,
        ]

    def move_keys(self, old_slot: str, new_slot: str) -> list[str]:
        """The seven keys of move.lua, in its order."""
        return [
            self.epoch,
            self.day,
            self.slot(old_slot),
            self.slot_free(old_slot),
            self.slot(new_slot),
            self.slot_free(new_slot),
            self.slot_returns(new_slot),
        ]


def open_holds(account: str) -> str:
    """Sorted set of one account's open holds ("site reservation", scored by hold expiry),
    for the per-account limit on holds; tagged by account, so it is one cluster slot."""
    return f"{PREFIX}:{{acct:{account}}}:holds"


def moving(reservation: str) -> str:
    """Lease held while one request moves a reservation to another slot: moves of one
    reservation never overlap, so none is undone by rebuilding counters under another."""
    return f"{PREFIX}:moving:{reservation}"


REQUEST_SHARDS = 16


@dataclass(frozen=True, slots=True)
class RequestKeys:
    """Keys of one idempotent request. The done record, the in-flight lock and the shard's
    "warm" marker share a hash tag, so one script reads all three (ARCHITECTURE §3); sixteen
    shards spread the keys over the cluster."""

    digest: str

    @classmethod
    def of(cls, owner: str, key: str) -> RequestKeys:
        return cls(hashlib.sha256(f"{owner}\x00{key}".encode()).hexdigest()[:32])

    @property
    def tag(self) -> str:
        return f"{PREFIX}:{{req:{int(self.digest[0], 16) % REQUEST_SHARDS:x}}}"

    @property
    def done(self) -> str:
        return f"{self.tag}:done:{self.digest}"

    @property
    def in_flight(self) -> str:
        return f"{self.tag}:inflight:{self.digest}"

    @property
    def started(self) -> str:
        """Set while an attempt runs and kept if it dies: its retry asks SQL for the answer."""
        return f"{self.tag}:started:{self.digest}"

    @property
    def warm(self) -> str:
        return warm_marker(int(self.digest[0], 16) % REQUEST_SHARDS)


def warm_marker(shard: int) -> str:
    """Present while the shard's done records were loaded from SQL (absent after data loss)."""
    return f"{PREFIX}:{{req:{shard:x}}}:warm"
