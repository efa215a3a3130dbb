"""Search index tables: indexes that answer the frequent searches on their own.

The status check of a search (an EXISTS on a resource's tokens) and the ``_include`` and
reindex lookups of a resource's rows read only the index; the patient lookup carries the
resource id. Rebuilding them locks writes to these tables for as long as it takes.

The tables' planner statistics are refreshed with the indexes: a SQLite database that had
statistics would otherwise keep them for the old indexes only, and its planner would
misjudge the new ones (a search by identifier chose the resource index and read every
row of the type). A SQLite database without statistics is left without them.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (index, table, columns before, columns after)
_CHANGES = [
    (
        "ix_search_tokens_resource",
        "search_tokens",
        ["resource_type", "resource_id"],
        ["resource_type", "resource_id", "param", "code", "system"],
    ),
    (
        "ix_search_references_lookup",
        "search_references",
        ["resource_type", "param", "target"],
        ["resource_type", "param", "target", "resource_id"],
    ),
    (
        "ix_search_references_resource",
        "search_references",
        ["resource_type", "resource_id"],
        ["resource_type", "resource_id", "param", "target"],
    ),
    (
        "ix_search_dates_resource",
        "search_dates",
        ["resource_type", "resource_id"],
        ["resource_type", "resource_id", "param", "low", "high"],
    ),
]


def upgrade() -> None:
    for name, table, _, after in _CHANGES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, after)
    _refresh_statistics()


def downgrade() -> None:
    for name, table, before, _ in _CHANGES:
        op.drop_index(name, table_name=table)
        op.create_index(name, table, before)
    _refresh_statistics()


def _refresh_statistics() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        analysed = bind.exec_driver_sql(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat1'"
        ).first()
        if analysed is None:
            return
    for table in sorted({table for _, table, _, _ in _CHANGES}):
        op.execute(f"ANALYZE {table}")
