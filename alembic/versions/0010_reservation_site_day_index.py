"""an index on a site-day's reservations, for counter rebuilds and the audit

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 07:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_reservation_site_day", "reservation", ["site_id", "visit_date", "status"])


def downgrade() -> None:
    op.drop_index("ix_reservation_site_day", table_name="reservation")
