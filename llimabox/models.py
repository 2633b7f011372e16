"""The SQLAlchemy ORM schema of the state database (migrations/ creates and upgrades it)."""

from __future__ import annotations

import datetime

from sqlalchemy import DateTime, Integer, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = ["Base", "Env"]


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
