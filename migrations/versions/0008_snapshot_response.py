"""results snapshots keep their serialized response

``results_snapshot.response`` is the ``GET …/results`` body of a ready snapshot, serialized
once by the refresh (the status label left as a placeholder, filled in on read), so that a read
decodes, validates and re-serializes nothing (product.md §12: reading costs nothing at any
size). Older snapshots have none and are serialized on read, as before.

Revision ID: 0008_snapshot_response
Revises: 0007_stats_methods
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_snapshot_response"
down_revision: str | None = "0007_stats_methods"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("results_snapshot", sa.Column("response", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("results_snapshot", "response")
