"""waitlist: parties waiting for a full slot, first come first served

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 23:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "waitlist_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("owner_id", sa.String(length=32), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("slot_id", sa.String(length=100), nullable=False),
        sa.Column("visit_date", sa.Date(), nullable=False),
        sa.Column("party_size", sa.Integer(), nullable=False),
        sa.Column("visitors", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reservation_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["account.id"]),
        sa.ForeignKeyConstraint(["slot_id"], ["slot.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("public_id"),
    )
    op.create_index("ix_waitlist_line", "waitlist_entry", ["slot_id", "status", "id"])
    op.create_index("ix_waitlist_entry_owner_id", "waitlist_entry", ["owner_id"])


def downgrade() -> None:
    op.drop_index("ix_waitlist_entry_owner_id", table_name="waitlist_entry")
    op.drop_index("ix_waitlist_line", table_name="waitlist_entry")
    op.drop_table("waitlist_entry")
