"""Initial schema: care plans, contracts, phases, goals, homework, sessions, change log.

Revision ID: 0001
Revises:
Create Date: 2026-11-25 20:49:12.354504
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.models

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "care_plans",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("patient", sa.String(length=512), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("variant", sa.String(length=20), nullable=False),
        sa.Column("planned_sessions", sa.Integer(), nullable=False),
        sa.Column("session_frequency", sa.String(length=20), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=False),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("primary_problem_area", sa.String(length=32), nullable=False),
        sa.Column("secondary_problem_area", sa.String(length=32), nullable=True),
        sa.Column("dispute_stage", sa.String(length=20), nullable=True),
        sa.Column("condition", sa.String(length=512), nullable=True),
        sa.Column("therapist", sa.String(length=512), nullable=True),
        sa.Column("formulation", sa.Text(), nullable=True),
        sa.Column("relapse_prevention", sa.JSON(), nullable=True),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("created_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("updated_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.Column("deleted_at", service.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deleted_by", sa.String(length=255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_care_plans")),
    )
    with op.batch_alter_table("care_plans", schema=None) as batch_op:
        batch_op.create_index("ix_care_plans_created_at_id", ["created_at", "id"], unique=False)
        batch_op.create_index("ix_care_plans_patient_status", ["patient", "status"], unique=False)
        batch_op.create_index(
            "ix_care_plans_primary_problem_area", ["primary_problem_area"], unique=False
        )
        batch_op.create_index(
            "ix_care_plans_secondary_problem_area", ["secondary_problem_area"], unique=False
        )
        batch_op.create_index("ix_care_plans_status", ["status"], unique=False)
        batch_op.create_index("ix_care_plans_updated_at", ["updated_at"], unique=False)
        batch_op.create_index("ix_care_plans_variant", ["variant"], unique=False)

    op.create_table(
        "goals",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("problem_area", sa.String(length=32), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("lifecycle_status", sa.String(length=20), nullable=False),
        sa.Column("achievement_status", sa.String(length=20), nullable=True),
        sa.Column("priority", sa.String(length=20), nullable=True),
        sa.Column("start_date", sa.Date(), nullable=True),
        sa.Column("target_measure", sa.String(length=32), nullable=True),
        sa.Column("target_comparator", sa.String(length=2), nullable=True),
        sa.Column("target_value", sa.Numeric(precision=9, scale=3), nullable=True),
        sa.Column("target_due_date", sa.Date(), nullable=True),
        sa.Column("phase", sa.String(length=20), nullable=True),
        sa.Column("notes", sa.JSON(), nullable=False),
        sa.Column("created_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("updated_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.Column("deleted_at", service.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deleted_by", sa.String(length=255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["care_plans.id"],
            name=op.f("fk_goals_plan_id_care_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_goals")),
    )
    with op.batch_alter_table("goals", schema=None) as batch_op:
        batch_op.create_index("ix_goals_lifecycle_status", ["lifecycle_status"], unique=False)
        batch_op.create_index(
            "ix_goals_plan_id_created_at", ["plan_id", "created_at"], unique=False
        )

    op.create_table(
        "phases",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=20), nullable=False),
        sa.Column("start_session", sa.Integer(), nullable=False),
        sa.Column("end_session", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("start_date", sa.Date(), nullable=True),
        sa.Column("end_date", sa.Date(), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("updated_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.Column("deleted_at", service.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deleted_by", sa.String(length=255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["care_plans.id"],
            name=op.f("fk_phases_plan_id_care_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_phases")),
        sa.UniqueConstraint("plan_id", "code", name=op.f("uq_phases_plan_id_code")),
    )
    op.create_table(
        "plan_changes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("plan_version", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(length=20), nullable=False),
        sa.Column("entity_id", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=10), nullable=False),
        sa.Column("fields", sa.JSON(), nullable=False),
        sa.Column("actor", sa.String(length=255), nullable=False),
        sa.Column("at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["care_plans.id"],
            name=op.f("fk_plan_changes_plan_id_care_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_changes")),
    )
    with op.batch_alter_table("plan_changes", schema=None) as batch_op:
        batch_op.create_index("ix_plan_changes_plan_id_id", ["plan_id", "id"], unique=False)

    op.create_table(
        "plan_contracts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("planned_sessions", sa.Integer(), nullable=False),
        sa.Column("session_frequency", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("agreed_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("agreed_by", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["care_plans.id"],
            name=op.f("fk_plan_contracts_plan_id_care_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_contracts")),
        sa.UniqueConstraint("plan_id", "sequence", name=op.f("uq_plan_contracts_plan_id_sequence")),
    )
    op.create_table(
        "plan_identifiers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("system", sa.String(length=512), nullable=False),
        sa.Column("value", sa.String(length=255), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["care_plans.id"],
            name=op.f("fk_plan_identifiers_plan_id_care_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_identifiers")),
        sa.UniqueConstraint("system", "value", name=op.f("uq_plan_identifiers_system_value")),
    )
    with op.batch_alter_table("plan_identifiers", schema=None) as batch_op:
        batch_op.create_index("ix_plan_identifiers_plan_id", ["plan_id"], unique=False)
        batch_op.create_index("ix_plan_identifiers_value", ["value"], unique=False)

    op.create_table(
        "sessions",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("date", sa.Date(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("phq9_total", sa.Integer(), nullable=True),
        sa.Column("techniques", sa.JSON(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("updated_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.Column("deleted_at", service.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deleted_by", sa.String(length=255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["care_plans.id"],
            name=op.f("fk_sessions_plan_id_care_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(
            "uq_sessions_plan_id_number_live",
            ["plan_id", "number"],
            unique=True,
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )

    op.create_table(
        "homework",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("plan_id", sa.String(length=64), nullable=False),
        sa.Column("phase", sa.String(length=20), nullable=False),
        sa.Column("goal_id", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("assigned_on", sa.Date(), nullable=False),
        sa.Column("due_on", sa.Date(), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("patient_report", sa.Text(), nullable=True),
        sa.Column("created_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=255), nullable=False),
        sa.Column("updated_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_by", sa.String(length=255), nullable=False),
        sa.Column("deleted_at", service.models.UTCDateTime(timezone=True), nullable=True),
        sa.Column("deleted_by", sa.String(length=255), nullable=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["goal_id"], ["goals.id"], name=op.f("fk_homework_goal_id_goals")),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["care_plans.id"],
            name=op.f("fk_homework_plan_id_care_plans"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_homework")),
    )
    with op.batch_alter_table("homework", schema=None) as batch_op:
        batch_op.create_index("ix_homework_goal_id", ["goal_id"], unique=False)
        batch_op.create_index(
            "ix_homework_plan_id_created_at", ["plan_id", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("homework", schema=None) as batch_op:
        batch_op.drop_index("ix_homework_plan_id_created_at")
        batch_op.drop_index("ix_homework_goal_id")

    op.drop_table("homework")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_sessions_plan_id_number_live",
            sqlite_where=sa.text("deleted_at IS NULL"),
            postgresql_where=sa.text("deleted_at IS NULL"),
        )

    op.drop_table("sessions")
    with op.batch_alter_table("plan_identifiers", schema=None) as batch_op:
        batch_op.drop_index("ix_plan_identifiers_value")
        batch_op.drop_index("ix_plan_identifiers_plan_id")

    op.drop_table("plan_identifiers")
    op.drop_table("plan_contracts")
    with op.batch_alter_table("plan_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_plan_changes_plan_id_id")

    op.drop_table("plan_changes")
    op.drop_table("phases")
    with op.batch_alter_table("goals", schema=None) as batch_op:
        batch_op.drop_index("ix_goals_plan_id_created_at")
        batch_op.drop_index("ix_goals_lifecycle_status")

    op.drop_table("goals")
    with op.batch_alter_table("care_plans", schema=None) as batch_op:
        batch_op.drop_index("ix_care_plans_variant")
        batch_op.drop_index("ix_care_plans_updated_at")
        batch_op.drop_index("ix_care_plans_status")
        batch_op.drop_index("ix_care_plans_secondary_problem_area")
        batch_op.drop_index("ix_care_plans_primary_problem_area")
        batch_op.drop_index("ix_care_plans_patient_status")
        batch_op.drop_index("ix_care_plans_created_at_id")

    op.drop_table("care_plans")
