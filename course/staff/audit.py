"""The audit log: every staff action, who did it, to what, and when (admins read it)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, col, select

from course.clock import Clock
from course.models import AuditEntry
from course.staff.accounts import Actor


def record(
    session: Session, clock: Clock, actor: Actor, *, action: str, target: str = "", **detail: Any
) -> None:
    """Log the action in the caller's transaction: it is kept exactly when the action is."""
    session.add(
        AuditEntry(
            at=clock.now(), actor=actor.label, action=action, target=target[:200], detail=detail
        )
    )


def recent(session: Session, *, limit: int = 200, before_id: int | None = None) -> list[AuditEntry]:
    query = select(AuditEntry).order_by(col(AuditEntry.id).desc()).limit(limit)
    if before_id is not None:
        query = query.where(col(AuditEntry.id) < before_id)
    return list(session.exec(query).all())
