"""release schedules, channel pools, refund policies, fair-release draws and group rules

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30 02:20:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("site") as batch:
        batch.add_column(sa.Column("release_batches", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("pool_rollover", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("refund_policy", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("fair_release", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("group_rules", sa.JSON(), nullable=True))
    with op.batch_alter_table("slot_template") as batch:
        batch.add_column(sa.Column("pools", sa.JSON(), nullable=True))
    with op.batch_alter_table("slot") as batch:
        batch.add_column(sa.Column("pools", sa.JSON(), nullable=True))
    with op.batch_alter_table("reservation") as batch:
        batch.add_column(
            sa.Column("channel", sa.String(length=10), nullable=False, server_default="online")
        )
        batch.add_column(sa.Column("places_back_at", sa.DateTime(), nullable=True))
    op.create_table(
        "draw",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=False),
        sa.Column("visit_date", sa.Date(), nullable=False),
        sa.Column("opens_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("seed", sa.String(length=64), nullable=True),
        sa.Column("drawn_at", sa.DateTime(), nullable=True),
        sa.Column("served_at", sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(["site_id"], ["site.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("site_id", "visit_date"),
    )
    op.create_table(
        "draw_entry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("draw_id", sa.Integer(), nullable=False),
        sa.Column("owner_id", sa.String(length=32), nullable=False),
        sa.Column("choices", sa.JSON(), nullable=False),
        sa.Column("party_size", sa.Integer(), nullable=False),
        sa.Column("visitors", sa.JSON(), nullable=False),
        sa.Column("early", sa.Boolean(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("slot_id", sa.String(length=100), nullable=True),
        sa.Column("choice", sa.Integer(), nullable=True),
        sa.Column("reservation_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["draw_id"], ["draw.id"]),
        sa.ForeignKeyConstraint(["owner_id"], ["account.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("draw_id", "owner_id"),
        sa.UniqueConstraint("public_id"),
    )
    op.create_index("ix_draw_entry_order", "draw_entry", ["draw_id", "status", "position"])
    op.create_table(
        "draw_person",
        sa.Column("draw_id", sa.Integer(), nullable=False),
        sa.Column("id_hash", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(["draw_id"], ["draw.id"]),
        sa.PrimaryKeyConstraint("draw_id", "id_hash"),
    )


def downgrade() -> None:
    op.drop_table("draw_person")
    op.drop_index("ix_draw_entry_order", table_name="draw_entry")
    op.drop_table("draw_entry")
    op.drop_table("draw")
    with op.batch_alter_table("reservation") as batch:
        batch.drop_column("places_back_at")
        batch.drop_column("channel")
    with op.batch_alter_table("slot") as batch:
        batch.drop_column("pools")
    with op.batch_alter_table("slot_template") as batch:
        batch.drop_column("pools")
    with op.batch_alter_table("site") as batch:
        batch.drop_column("group_rules")
        batch.drop_column("fair_release")
        batch.drop_column("refund_policy")
        batch.drop_column("pool_rollover")
        batch.drop_column("release_batches")
