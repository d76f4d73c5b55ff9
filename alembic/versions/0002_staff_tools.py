"""staff tools: per-account limits, closures, outbox, verified registration

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "site", sa.Column("account_day_limit", sa.Integer(), nullable=False, server_default="3")
    )
    op.add_column(
        "site", sa.Column("account_hold_limit", sa.Integer(), nullable=False, server_default="2")
    )
    op.add_column("site", sa.Column("closed_reason", sa.String(length=200), nullable=True))
    op.add_column("slot", sa.Column("closed_reason", sa.String(length=200), nullable=True))
    op.add_column("reservation", sa.Column("cancel_reason", sa.String(length=200), nullable=True))
    op.add_column("reservation", sa.Column("alternatives", sa.JSON(), nullable=True))
    # "cancelled_by_site" is longer than the 12 characters of 0001. SQLite does not enforce
    # VARCHAR lengths (and would have to copy the table to change one), PostgreSQL does.
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "reservation",
            "status",
            type_=sa.String(length=20),
            existing_type=sa.String(length=12),
            existing_nullable=False,
        )
    op.create_table(
        "outbox_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("topic", sa.String(length=60), nullable=False),
        sa.Column("site_id", sa.String(length=64), nullable=True),
        sa.Column("account_id", sa.String(length=32), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "registration",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("login", sa.String(length=254), nullable=False),
        sa.Column("channel", sa.String(length=10), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("code_hash", sa.String(length=64), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash"),
    )
    op.create_index("ix_registration_login", "registration", ["login"])
    op.create_index("ix_outbox_event_site_id", "outbox_event", ["site_id"])
    op.create_index("ix_outbox_event_account_id", "outbox_event", ["account_id"])
    op.create_index("ix_outbox_event_delivered_at", "outbox_event", ["delivered_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_event_delivered_at", table_name="outbox_event")
    op.drop_index("ix_outbox_event_account_id", table_name="outbox_event")
    op.drop_index("ix_outbox_event_site_id", table_name="outbox_event")
    op.drop_table("outbox_event")
    op.drop_index("ix_registration_login", table_name="registration")
    op.drop_table("registration")
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "reservation",
            "status",
            type_=sa.String(length=12),
            existing_type=sa.String(length=20),
            existing_nullable=False,
        )
    with op.batch_alter_table("reservation") as batch:
        batch.drop_column("alternatives")
        batch.drop_column("cancel_reason")
    with op.batch_alter_table("slot") as batch:
        batch.drop_column("closed_reason")
    with op.batch_alter_table("site") as batch:
        batch.drop_column("closed_reason")
        batch.drop_column("account_hold_limit")
        batch.drop_column("account_day_limit")
