"""analysis: covering index of conversions per unit and time

The results query reads, for each analysed unit, its conversions in a time window. With
``(unit_id, ts, name, value)`` that is one index range read per unit that never touches the table
(the existing ``(name, unit_id, ts)`` index needs one seek per event name and a table lookup per
row). Measured by ``bench/results.py``.

Revision ID: 0003
Revises: 0002
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_conversion_unit_ts_name_value",
        "conversion",
        ["unit_id", "ts", "name", "value"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_conversion_unit_ts_name_value", table_name="conversion")
