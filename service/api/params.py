"""Parameters several routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

# Row ids are 64-bit integers in SQLite and PostgreSQL: a larger number in a path is refused
# with 422 naming it, not sent to the database to overflow there.
MAX_ROW_ID = 2**62

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
