"""The envs table.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "envs",
        sa.Column("name", sa.String, primary_key=True),
        sa.Column("project", sa.String, nullable=False),
        sa.Column("backend", sa.String, nullable=False),
        sa.Column("guest", sa.String, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("guest_version", sa.Integer, nullable=True),
        sa.UniqueConstraint("guest", "project"),
    )


def downgrade() -> None:
    op.drop_table("envs")
