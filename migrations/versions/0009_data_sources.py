"""data sources: warehouse-native analysis (product.md §13)

``data_source`` holds each data source (engine, connection, mapping of the organisation's
exposure and event tables); ``experiment.data_source`` names the one an experiment is analysed
on (NULL: the built-in store).

Revision ID: 0009_data_sources
Revises: 0007_stats_methods
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.db

revision: str = "0009_data_sources"
down_revision: str | None = "0008_snapshot_response"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "data_source",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(length=80), nullable=False),
        sa.Column("engine", sa.String(length=20), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=True),
        sa.Column("connection", sa.JSON(), nullable=False),
        sa.Column("exposures", sa.JSON(), nullable=False),
        sa.Column("events", sa.JSON(), nullable=False),
        sa.Column("timeout_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", service.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", service.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    with op.batch_alter_table("experiment") as batch:
        batch.add_column(sa.Column("data_source", sa.String(length=80), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiment") as batch:
        batch.drop_column("data_source")
    op.drop_table("data_source")
