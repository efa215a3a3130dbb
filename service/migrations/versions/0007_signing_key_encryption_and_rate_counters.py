"""Signing keys are kept encrypted and can be rotated; token requests are counted.

``signing_keys`` gains ``encrypted_key`` (the private key encrypted with the
key-encryption key) and ``retired_at`` (set when a rotation replaced the key);
``private_pem`` may now be empty. Existing plain keys are encrypted by the service when it
starts with a key-encryption key configured. ``rate_counters`` holds the token endpoint's
rate-limit counters when they are kept in the database.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import service.models

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.alter_column("private_pem", existing_type=sa.Text(), nullable=True)
        batch_op.add_column(sa.Column("encrypted_key", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("retired_at", service.models.UTCDateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "rate_counters",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("expires_at", service.models.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_rate_counters")),
    )
    with op.batch_alter_table("rate_counters", schema=None) as batch_op:
        batch_op.create_index("ix_rate_counters_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("rate_counters", schema=None) as batch_op:
        batch_op.drop_index("ix_rate_counters_expires_at")
    op.drop_table("rate_counters")
    # A key kept only encrypted cannot go back to a plain column: downgrading needs the
    # rows to be plain (no key-encryption key configured) or the keys to be removed.
    op.execute("DELETE FROM signing_keys WHERE private_pem IS NULL")
    with op.batch_alter_table("signing_keys", schema=None) as batch_op:
        batch_op.drop_column("retired_at")
        batch_op.drop_column("encrypted_key")
        batch_op.alter_column("private_pem", existing_type=sa.Text(), nullable=False)
