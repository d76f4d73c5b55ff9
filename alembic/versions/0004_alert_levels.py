"""alert levels: per-site thresholds, the log of level changes

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 20:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("site", sa.Column("alert_thresholds", sa.JSON(), nullable=True))
    op.create_table(
        "alert_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("visit_date", sa.Date(), nullable=False),
        sa.Column("level_from", sa.String(length=10), nullable=False),
        sa.Column("level_to", sa.String(length=10), nullable=False),
        sa.Column("instant_load", sa.Float(), nullable=False),
        sa.Column("day_load", sa.Float(), nullable=False),
        sa.Column("action", sa.String(length=200), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_alert_change_site_id", "alert_change", ["site_id"])


def downgrade() -> None:
    op.drop_index("ix_alert_change_site_id", table_name="alert_change")
    op.drop_table("alert_change")
    with op.batch_alter_table("site") as batch:
        batch.drop_column("alert_thresholds")
