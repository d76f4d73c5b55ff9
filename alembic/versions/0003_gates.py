"""gates: entry grace, visitors' entries and exits, the scan log

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29 20:35:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "site",
        sa.Column("entry_grace_minutes", sa.Integer(), nullable=False, server_default="15"),
    )
    op.add_column("visitor", sa.Column("entered_at", sa.DateTime(), nullable=True))
    op.add_column("visitor", sa.Column("entry_gate", sa.String(length=100), nullable=True))
    op.add_column("visitor", sa.Column("exited_at", sa.DateTime(), nullable=True))
    op.add_column("visitor", sa.Column("exit_gate", sa.String(length=100), nullable=True))
    op.create_table(
        "scan_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("gate_id", sa.String(length=100), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("reservation_id", sa.String(length=32), nullable=True),
        sa.Column("direction", sa.String(length=10), nullable=False),
        sa.Column("people", sa.Integer(), nullable=False),
        sa.Column("result", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_scan_event_site_at", "scan_event", ["site_id", "at"])
    op.create_index("ix_scan_event_reservation_id", "scan_event", ["reservation_id"])


def downgrade() -> None:
    op.drop_index("ix_scan_event_reservation_id", table_name="scan_event")
    op.drop_index("ix_scan_event_site_at", table_name="scan_event")
    op.drop_table("scan_event")
    with op.batch_alter_table("visitor") as batch:
        batch.drop_column("exit_gate")
        batch.drop_column("exited_at")
        batch.drop_column("entry_gate")
        batch.drop_column("entered_at")
    with op.batch_alter_table("site") as batch:
        batch.drop_column("entry_grace_minutes")
