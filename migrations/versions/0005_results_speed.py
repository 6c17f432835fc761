"""analysis: covering index of exposure units per variant

The results query on SQLite runs once per variant over ``(experiment_id, phase, variant,
unit_id)``: each variant's units are one index range read that never touches the table, and the
per-variant sums need no sort of every unit by variant (SQLite has no hash aggregate). The count of
exposures per variant reads the same index only. Measured by ``bench/results.py``.

Revision ID: 0005
Revises: 0004
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_exposure_unit_variant",
        "exposure_unit",
        ["experiment_id", "phase", "variant", "unit_id", "first_ts", "multiple"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_exposure_unit_variant", table_name="exposure_unit")
