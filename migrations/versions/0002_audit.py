"""The audit tables of ``llima-box serve``: authentication attempts and sessions.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_auth",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("login", sa.String, nullable=False),
        sa.Column("user", sa.String, nullable=False),
        sa.Column("source", sa.String, nullable=False),
        sa.Column("method", sa.String, nullable=False),
        sa.Column("result", sa.String, nullable=False),
        sa.Column("detail", sa.String, nullable=True),
    )
    op.create_index("ix_audit_auth_at", "audit_auth", ["at"])
    op.create_index("ix_audit_auth_user", "audit_auth", ["user"])
    op.create_table(
        "audit_sessions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("user", sa.String, nullable=False),
        sa.Column("source", sa.String, nullable=False),
        sa.Column("env", sa.String, nullable=True),
        sa.Column("project", sa.String, nullable=True),
        sa.Column("kind", sa.String, nullable=False),
        sa.Column("command", sa.String, nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_status", sa.Integer, nullable=True),
        sa.Column("bytes_in", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("bytes_out", sa.BigInteger, nullable=False, server_default="0"),
    )
    op.create_index("ix_audit_sessions_started_at", "audit_sessions", ["started_at"])
    op.create_index("ix_audit_sessions_user", "audit_sessions", ["user"])


def downgrade() -> None:
    op.drop_table("audit_sessions")
    op.drop_table("audit_auth")
