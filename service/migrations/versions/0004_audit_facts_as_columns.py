"""Audit records keep their facts in columns; the AuditEvent is rendered when it is read.

Records written before keep their stored AuditEvent (``content``), which stays what is
served for them; their client id is copied into the new ``client_id`` column so that the
trail is searched by client through an index, not through the stored text.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 04:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.models

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Where a stored AuditEvent names its client: the requesting agent's identifier.
_SQLITE_CLIENT = "json_extract(content, '$.agent[0].who.identifier.value')"
_POSTGRESQL_CLIENT = "CAST(content AS json) #>> '{agent,0,who,identifier,value}'"


def upgrade() -> None:
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.alter_column("content", existing_type=sa.Text(), nullable=True)
        batch_op.add_column(
            sa.Column("started", service.models.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("interaction", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("status", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("client_id", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("user_name", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("address", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("request_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("query", sa.Text(), nullable=True))
    client = _SQLITE_CLIENT if op.get_bind().dialect.name == "sqlite" else _POSTGRESQL_CLIENT
    op.execute(f"UPDATE audit_events SET client_id = {client} WHERE content IS NOT NULL")
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.create_index("ix_audit_events_client_id", ["client_id", "recorded"], unique=False)


def downgrade() -> None:
    from fhir_mappings.audit_event import AuditFacts, render_audit_event
    from fhir_mappings.projection import serialise

    connection = op.get_bind()
    table = sa.table(
        "audit_events",
        *(
            sa.column(name)
            for name in (
                "id",
                "action",
                "outcome",
                "agent",
                "entity",
                "patient",
                "content",
                "interaction",
                "status",
                "client_id",
                "user_name",
                "address",
                "request_id",
                "query",
            )
        ),
        sa.column("recorded", service.models.UTCDateTime(timezone=True)),
        sa.column("started", service.models.UTCDateTime(timezone=True)),
    )
    # The stored text comes back for the records that have none, rendered from their facts.
    names = [name if name != "user" else "user_name" for name in AuditFacts.__dataclass_fields__]
    columns = [table.c[name] for name in names]
    found = connection.execute(sa.select(*columns).where(table.c.content.is_(None)))
    for row in list(found):
        facts = AuditFacts(*row)
        content = serialise(render_audit_event(facts))
        connection.execute(table.update().where(table.c.id == facts.id).values(content=content))
    with op.batch_alter_table("audit_events", schema=None) as batch_op:
        batch_op.drop_index("ix_audit_events_client_id")
        batch_op.drop_column("query")
        batch_op.drop_column("request_id")
        batch_op.drop_column("address")
        batch_op.drop_column("user_name")
        batch_op.drop_column("client_id")
        batch_op.drop_column("status")
        batch_op.drop_column("interaction")
        batch_op.drop_column("started")
        batch_op.alter_column("content", existing_type=sa.Text(), nullable=False)
