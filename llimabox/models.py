"""The SQLAlchemy ORM schema of the state database (migrations/ creates and upgrades it)."""

from __future__ import annotations

import datetime

from sqlalchemy import BigInteger, DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Env", "AuthAttempt", "SessionLog"]


class Base(DeclarativeBase):
    pass


class Env(Base):
    """One environment, as this host knows it."""

    __tablename__ = "envs"
    __table_args__ = (UniqueConstraint("guest", "project"),)

    name: Mapped[str] = mapped_column(String, primary_key=True)
    project: Mapped[str] = mapped_column(String)
    backend: Mapped[str] = mapped_column(String)
    guest: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    guest_version: Mapped[int | None] = mapped_column(Integer, nullable=True)


class AuthAttempt(Base):
    """One authentication attempt at ``llima-box serve``."""

    __tablename__ = "audit_auth"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), index=True)
    login: Mapped[str] = mapped_column(String)  # the SSH user name as sent, e.g. alice+web
    user: Mapped[str] = mapped_column(String, index=True)  # the account part
    source: Mapped[str] = mapped_column(String)
    method: Mapped[str] = mapped_column(String)
    result: Mapped[str] = mapped_column(String)  # success, failure, refused, locked
    detail: Mapped[str | None] = mapped_column(String, nullable=True)


class SessionLog(Base):
    """One session (exec, shell or subsystem) of ``llima-box serve``."""

    __tablename__ = "audit_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(String, index=True)
    source: Mapped[str] = mapped_column(String)
    env: Mapped[str | None] = mapped_column(String, nullable=True)
    project: Mapped[str | None] = mapped_column(String, nullable=True)
    kind: Mapped[str] = mapped_column(String)  # exec, shell, subsystem
    command: Mapped[str | None] = mapped_column(String, nullable=True)
    started_at: Mapped[datetime.datetime] = mapped_column(DateTime(timezone=True), index=True)
    ended_at: Mapped[datetime.datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    exit_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    bytes_in: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_out: Mapped[int] = mapped_column(BigInteger, default=0)
