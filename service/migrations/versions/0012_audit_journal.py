"""The audit journal: the records of reads, searches and refusals are committed there
before their responses leave, and move into ``audit_events`` in batches.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.models

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (
    "id, recorded, action, outcome, agent, entity, patient, content, started, interaction, "
    "status, client_id, user_name, address, request_id, query"
)


def upgrade() -> None:
    op.create_table(
        "audit_journal",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("recorded", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=1), nullable=False),
        sa.Column("outcome", sa.String(length=2), nullable=False),
        sa.Column("agent", sa.String(length=255), nullable=False),
        sa.Column("entity", sa.String(length=512), nullable=True),
        sa.Column("patient", sa.String(length=512), nullable=True),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("started", service.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("interaction", sa.String(length=32), nullable=True),
        sa.Column("status", sa.Integer(), nullable=True),
        sa.Column("client_id", sa.Text(), nullable=True),
        sa.Column("user_name", sa.Text(), nullable=True),
        sa.Column("address", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("query", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_journal")),
    )


def downgrade() -> None:
    # No record is lost: what waits in the journal moves into the trail first.
    op.execute(
        f"INSERT INTO audit_events ({_COLUMNS}) SELECT {_COLUMNS} FROM audit_journal "
        "WHERE id NOT IN (SELECT id FROM audit_events)"
    )
    op.drop_table("audit_journal")
