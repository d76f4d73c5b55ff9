"""sales stops: site-days whose sales stopped at an alert level

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 21:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sales_stop",
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("visit_date", sa.Date(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("site_id", "visit_date"),
    )


def downgrade() -> None:
    op.drop_table("sales_stop")
