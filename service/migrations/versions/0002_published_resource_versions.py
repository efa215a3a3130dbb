"""Published resource versions (the current document and every version) and search indexes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 21:09:14.424432
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.models

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "resource_versions",
        sa.Column("sequence", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("method", sa.String(length=10), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("sequence", name=op.f("pk_resource_versions")),
        sa.UniqueConstraint(
            "resource_type",
            "id",
            "version_id",
            name=op.f("uq_resource_versions_resource_type_id_version_id"),
        ),
    )
    with op.batch_alter_table("resource_versions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_resource_versions_last_updated", ["last_updated", "sequence"], unique=False
        )
        batch_op.create_index(
            "ix_resource_versions_type_last_updated",
            ["resource_type", "last_updated", "sequence"],
            unique=False,
        )

    op.create_table(
        "stored_resources",
        sa.Column("resource_type", sa.String(length=40), nullable=False),
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("last_updated", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("extras", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["care_plans.id"],
            name=op.f("fk_stored_resources_plan_id_care_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("resource_type", "id", name=op.f("pk_stored_resources")),
    )
    with op.batch_alter_table("stored_resources", schema=None) as batch_op:
        batch_op.create_index("ix_stored_resources_plan_id", ["plan_id"], unique=False)
        batch_op.create_index(
            "ix_stored_resources_type_last_updated",
            ["resource_type", "last_updated", "id"],
            unique=False,
        )

    op.create_table(
        "search_tokens",
        sa.Column("row", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=40), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=40), nullable=False),
        sa.Column("system", sa.String(length=512), nullable=True),
        sa.Column("code", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("row", name=op.f("pk_search_tokens")),
    )
    with op.batch_alter_table("search_tokens", schema=None) as batch_op:
        batch_op.create_index(
            "ix_search_tokens_lookup", ["resource_type", "param", "code", "system"], unique=False
        )
        batch_op.create_index(
            "ix_search_tokens_resource", ["resource_type", "resource_id"], unique=False
        )

    op.create_table(
        "search_references",
        sa.Column("row", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=40), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=40), nullable=False),
        sa.Column("target", sa.String(length=512), nullable=False),
        sa.PrimaryKeyConstraint("row", name=op.f("pk_search_references")),
    )
    with op.batch_alter_table("search_references", schema=None) as batch_op:
        batch_op.create_index(
            "ix_search_references_lookup", ["resource_type", "param", "target"], unique=False
        )
        batch_op.create_index(
            "ix_search_references_resource", ["resource_type", "resource_id"], unique=False
        )

    op.create_table(
        "search_dates",
        sa.Column("row", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=40), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.Column("param", sa.String(length=40), nullable=False),
        sa.Column("low", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("high", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("row", name=op.f("pk_search_dates")),
    )
    with op.batch_alter_table("search_dates", schema=None) as batch_op:
        batch_op.create_index(
            "ix_search_dates_lookup", ["resource_type", "param", "low", "high"], unique=False
        )
        batch_op.create_index(
            "ix_search_dates_resource", ["resource_type", "resource_id"], unique=False
        )

    op.create_table(
        "resource_identifiers",
        sa.Column("resource_type", sa.String(length=40), nullable=False),
        sa.Column("system", sa.String(length=512), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.Column("resource_id", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint(
            "resource_type", "system", "value", name=op.f("pk_resource_identifiers")
        ),
    )
    with op.batch_alter_table("resource_identifiers", schema=None) as batch_op:
        batch_op.create_index(
            "ix_resource_identifiers_resource", ["resource_type", "resource_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("resource_identifiers", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_identifiers_resource")
    op.drop_table("resource_identifiers")
    for table in ("search_dates", "search_references", "search_tokens"):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(f"ix_{table}_resource")
            batch_op.drop_index(f"ix_{table}_lookup")
        op.drop_table(table)
    with op.batch_alter_table("stored_resources", schema=None) as batch_op:
        batch_op.drop_index("ix_stored_resources_type_last_updated")
        batch_op.drop_index("ix_stored_resources_plan_id")

    op.drop_table("stored_resources")
    with op.batch_alter_table("resource_versions", schema=None) as batch_op:
        batch_op.drop_index("ix_resource_versions_type_last_updated")
        batch_op.drop_index("ix_resource_versions_last_updated")

    op.drop_table("resource_versions")
