"""stats methods: recorded looks of group sequential designs, quantile metrics

``metric.quantile`` is the level of a quantile metric (``type: quantile``). ``analysis_look`` keeps the information fraction of every look of a group sequential design
(``analysis.method: group_sequential``) per experiment phase, so that Lan-DeMets spending knows
the earlier looks as they happened (``service/analysis/looks.py``).

Revision ID: 0007_stats_methods
Revises: 0006_snapshots
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.db

revision: str = "0007_stats_methods"
down_revision: str | None = "0006_snapshots"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("metric") as batch:
        batch.add_column(sa.Column("quantile", sa.Float(), nullable=True))
    op.create_table(
        "analysis_look",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("look", sa.Integer(), nullable=False),
        sa.Column("units", sa.Integer(), nullable=False),
        sa.Column("information_fraction", sa.Float(), nullable=False),
        sa.Column("recorded_at", service.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiment.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("experiment_id", "phase", "look", name="uq_analysis_look"),
    )


def downgrade() -> None:
    op.drop_table("analysis_look")
    with op.batch_alter_table("metric") as batch:
        batch.drop_column("quantile")
