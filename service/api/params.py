"""Parameters several routes share."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path

# Row ids are PostgreSQL `integer`s (32 bits; SQLite's are wider): a larger number is refused
# with 422 naming it, not sent to the database to overflow there. Two billion rows of a table
# is thousands of years of the core area's visitors.
MAX_ROW_ID = 2**31 - 1

RowId = Annotated[int, Path(ge=1, le=MAX_ROW_ID)]
