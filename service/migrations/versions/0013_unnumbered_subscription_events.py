"""Subscription events are written unnumbered and numbered afterwards.

A write no longer raises its subscriptions' counters (which locked their rows until it
committed, so that every write matching one subscription waited for the one before): it
only inserts its events, with no number. ``subscription_events`` gets an autoincrement
``id`` as its primary key, ``event_number`` becomes nullable (unique per subscription
once set), and a partial index finds the events still to number.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.models

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UNNUMBERED = "event_number IS NULL"
_COLUMNS = (
    "subscription_id, event_number, topic, focus_type, focus_id, focus_version, patient, "
    "occurred_at, delivered_at"
)


def _event_columns(*, numbered: bool) -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("subscription_id", sa.String(length=64), nullable=False),
        sa.Column("event_number", sa.Integer(), nullable=not numbered),
        sa.Column("topic", sa.String(length=512), nullable=False),
        sa.Column("focus_type", sa.String(length=40), nullable=False),
        sa.Column("focus_id", sa.String(length=64), nullable=False),
        sa.Column("focus_version", sa.Integer(), nullable=False),
        sa.Column("patient", sa.String(length=512), nullable=True),
        sa.Column("occurred_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", service.models.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["subscription_id"],
            ["subscriptions.id"],
            name=op.f("fk_subscription_events_subscription_id_subscriptions"),
            ondelete="CASCADE",
        ),
    ]


def _swap_sqlite(columns: list[sa.schema.SchemaItem], order: str) -> None:
    """SQLite changes no primary key in place: the table is built anew and refilled."""
    op.drop_index("ix_subscription_events_occurred_at", table_name="subscription_events")
    op.rename_table("subscription_events", "_subscription_events_old")
    op.create_table("subscription_events", *columns)
    op.execute(
        f"INSERT INTO subscription_events ({_COLUMNS}) "
        f"SELECT {_COLUMNS} FROM _subscription_events_old ORDER BY {order}"
    )
    op.drop_table("_subscription_events_old")
    op.create_index(
        "ix_subscription_events_occurred_at", "subscription_events", ["occurred_at"], unique=False
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        _swap_sqlite(
            [
                sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
                *_event_columns(numbered=False),
                sa.PrimaryKeyConstraint("id", name=op.f("pk_subscription_events")),
                sa.UniqueConstraint(
                    "subscription_id",
                    "event_number",
                    name=op.f("uq_subscription_events_subscription_id_event_number"),
                ),
            ],
            "subscription_id, event_number",
        )
    else:
        op.drop_constraint("pk_subscription_events", "subscription_events", type_="primary")
        # SERIAL, as the other autoincrement keys: the existing events get their ids.
        op.execute("ALTER TABLE subscription_events ADD COLUMN id SERIAL NOT NULL")
        op.create_primary_key("pk_subscription_events", "subscription_events", ["id"])
        op.alter_column(
            "subscription_events", "event_number", existing_type=sa.Integer(), nullable=True
        )
        op.create_unique_constraint(
            op.f("uq_subscription_events_subscription_id_event_number"),
            "subscription_events",
            ["subscription_id", "event_number"],
        )
    op.create_index(
        "ix_subscription_events_unnumbered",
        "subscription_events",
        ["subscription_id", "id"],
        unique=False,
        sqlite_where=sa.text(_UNNUMBERED),
        postgresql_where=sa.text(_UNNUMBERED),
    )


def downgrade() -> None:
    # Events still unnumbered are numbered first, in id order after each subscription's
    # last one, so that none is lost. (An event is counted whether the statement has
    # numbered it yet or not: unnumbered, or numbered past the counter not yet raised.)
    op.execute(
        "UPDATE subscription_events SET event_number = "
        "(SELECT s.events_since_start FROM subscriptions s "
        " WHERE s.id = subscription_events.subscription_id) + "
        "(SELECT count(*) FROM subscription_events e JOIN subscriptions s "
        " ON s.id = e.subscription_id "
        " WHERE e.subscription_id = subscription_events.subscription_id "
        " AND (e.event_number IS NULL OR e.event_number > s.events_since_start) "
        " AND e.id <= subscription_events.id) "
        "WHERE event_number IS NULL"
    )
    op.execute(
        "UPDATE subscriptions SET events_since_start = "
        "(SELECT max(e.event_number) FROM subscription_events e "
        " WHERE e.subscription_id = subscriptions.id) "
        "WHERE EXISTS (SELECT 1 FROM subscription_events e "
        " WHERE e.subscription_id = subscriptions.id "
        " AND e.event_number > subscriptions.events_since_start)"
    )
    op.drop_index("ix_subscription_events_unnumbered", table_name="subscription_events")
    if op.get_bind().dialect.name == "sqlite":
        _swap_sqlite(
            [
                *_event_columns(numbered=True),
                sa.PrimaryKeyConstraint(
                    "subscription_id", "event_number", name=op.f("pk_subscription_events")
                ),
            ],
            "subscription_id, event_number",
        )
    else:
        op.drop_constraint(
            op.f("uq_subscription_events_subscription_id_event_number"),
            "subscription_events",
            type_="unique",
        )
        op.drop_constraint("pk_subscription_events", "subscription_events", type_="primary")
        op.drop_column("subscription_events", "id")
        op.alter_column(
            "subscription_events", "event_number", existing_type=sa.Integer(), nullable=False
        )
        op.create_primary_key(
            "pk_subscription_events", "subscription_events", ["subscription_id", "event_number"]
        )
