"""results snapshots, their per-day series, the refresh claim; exposure attributes

``results_snapshot`` stores each refresh of an experiment's results (the §6 contract, the
sufficient statistics it came from, the slices and the series), ``results_day`` the point of
each finished day of a phase (computed once, reused by every later refresh), and
``results_refresh_claim`` one row per experiment being refreshed, so that one refresh runs at a
time across processes. ``exposure_unit.attributes`` keeps the dimensions of a unit's first
exposure, ``experiment.dimensions`` the protocol's list of them (product.md §2, §12).

Revision ID: 0006_snapshots
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from service.db import UTCDateTime

revision: str = "0006_snapshots"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("exposure_unit", sa.Column("attributes", sa.JSON(), nullable=True))
    op.add_column("experiment", sa.Column("dimensions", sa.JSON(), nullable=True))
    op.execute("UPDATE experiment SET dimensions = '[]'")
    op.create_table(
        "results_snapshot",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column(
            "experiment_id",
            sa.Integer(),
            sa.ForeignKey("experiment.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("trigger", sa.String(length=20), nullable=False),
        sa.Column("requested_at", UTCDateTime(), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=True),
        sa.Column("data_until", UTCDateTime(), nullable=True),
        sa.Column("exposure_watermark", sa.BigInteger(), nullable=True),
        sa.Column("conversion_watermark", sa.BigInteger(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=True),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("data", sa.JSON(), nullable=True),
        sa.Column("slices", sa.JSON(), nullable=True),
        sa.Column("timeseries", sa.JSON(), nullable=True),
        sa.Column("error", sa.String(length=2000), nullable=True),
    )
    op.create_index(
        "ix_results_snapshot_latest", "results_snapshot", ["experiment_id", "phase", "state", "id"]
    )
    op.create_table(
        "results_day",
        sa.Column(
            "experiment_id",
            sa.Integer(),
            sa.ForeignKey("experiment.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("phase", sa.Integer(), primary_key=True),
        sa.Column("day", sa.Integer(), primary_key=True),
        sa.Column("fingerprint", sa.String(length=64), primary_key=True),
        sa.Column("until", UTCDateTime(), nullable=False),
        sa.Column("computed_at", UTCDateTime(), nullable=False),
        sa.Column("point", sa.JSON(), nullable=False),
    )
    op.create_table(
        "results_refresh_claim",
        sa.Column(
            "experiment_id",
            sa.Integer(),
            sa.ForeignKey("experiment.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("claimed_at", UTCDateTime(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("results_refresh_claim")
    op.drop_table("results_day")
    op.drop_index("ix_results_snapshot_latest", table_name="results_snapshot")
    op.drop_table("results_snapshot")
    op.drop_column("experiment", "dimensions")
    op.drop_column("exposure_unit", "attributes")
