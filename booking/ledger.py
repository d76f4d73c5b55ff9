"""Group commit of holds: every hold waiting when the writer is free goes into one SQL
transaction.

At a 20:00 release thousands of holds arrive together. Written one transaction each, they
queue for SQLite's single writer and every transaction pays several round trips to the
database thread; written together, one transaction carries as many holds as arrived
meanwhile. Nothing about the proof changes: the partial unique indexes check every row, and if
a batch fails, its holds are written again one by one so each gets its own verdict
(`UnitConflict`, `KeyConflict`, ...), exactly as if it had been alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from booking import repository as repo

log = logging.getLogger(__name__)


@dataclass(eq=False)
class PendingHold:
    """The rows of one hold, and what became of them."""

    reservation: dict[str, Any]
    visitors: list[dict[str, Any]]
    record: dict[str, Any] | None = None
    event: dict[str, Any] | None = None  # the `reservation.held` outbox row
    committed: bool = False
    settled: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class HoldLedger:
    def __init__(self, engine: AsyncEngine, *, max_batch: int = 256):
        # A bare connection, not an ORM session: these are plain inserts on the hot path.
        self._engine = engine
        self._max_batch = max_batch
        self._waiting: list[PendingHold] = []
        self._writing: list[PendingHold] = []
        self._wakeup = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None

    async def write(self, hold: PendingHold) -> None:
        """Commit one hold (with others); raises what its own transaction would have raised."""
        self._waiting.append(hold)
        self._wakeup.set()
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._run(), name="ledger")
        await asyncio.shield(hold.settled)

    async def outcome(self, hold: PendingHold) -> bool:
        """Wait until the hold is settled either way (a cancelled caller must know whether its
        hold was committed before giving its places back); True if it was committed."""
        with contextlib.suppress(Exception):
            await asyncio.shield(hold.settled)
        return hold.committed

    async def close(self) -> None:
        """Finish every hold already handed in (graceful shutdown), then stop the writer."""
        unsettled = [hold.settled for hold in [*self._writing, *self._waiting]]
        await asyncio.gather(*unsettled, return_exceptions=True)
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._waiting:
                self._writing = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                await self._write(self._writing)
                self._writing = []

    async def _write(self, batch: list[PendingHold]) -> None:
        try:
            await self._insert(batch)
        except Exception as error:
            if len(batch) == 1 or not isinstance(error, IntegrityError):
                # The database itself failed (locked, gone): every hold of the batch fails
                # with it, at once, rather than each waiting out the same failure again.
                for hold in batch:
                    _settle(hold, error)
                return
            # One bad hold must not sink the others: each is written alone for its verdict.
            for hold in batch:
                try:
                    await self._insert([hold])
                except Exception as alone:
                    _settle(hold, alone)
                else:
                    _settle(hold, None)
        else:
            for hold in batch:
                _settle(hold, None)

    async def _insert(self, batch: list[PendingHold]) -> None:
        async with self._engine.begin() as connection:
            await repo.add_holds(
                connection,
                [hold.reservation for hold in batch],
                [row for hold in batch for row in hold.visitors],
                [hold.record for hold in batch if hold.record is not None],
                [hold.event for hold in batch if hold.event is not None],
            )


def _settle(hold: PendingHold, error: Exception | None) -> None:
    if hold.settled.done():  # pragma: no cover - each hold is settled once
        return
    if error is None:
        hold.committed = True
        hold.settled.set_result(None)
    else:
        hold.settled.set_exception(error)
        # Nobody may be awaiting any more (a cancelled request): keep asyncio quiet about it.
        hold.settled.exception()
