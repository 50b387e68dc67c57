""" "Was this helpful? yes / no" at the foot of each lesson: one click, counted per lesson only.

The link names the lesson (its version and position), never the reader, so the counts say how a
lesson lands without saying who answered. No open pixels, no redirects through us.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import CursorResult, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from course.errors import TokenInvalid
from course.models import Lesson, LessonFeedback


def lesson_named(token_key: str) -> tuple[int, int]:
    """(version id, position) from what a "was this helpful?" link names."""
    version, _, position = token_key.partition(".")
    if not (version.isdigit() and position.isdigit()):
        raise TokenInvalid("This link is not valid.")
    return int(version), int(position)


def count(session: Session, *, version_id: int, position: int, helpful: bool) -> bool:
    """Add one answer for the lesson; False if there is no such lesson (a stale link)."""
    lesson = session.exec(
        select(Lesson).where(col(Lesson.version_id) == version_id, col(Lesson.position) == position)
    ).first()
    if lesson is None:
        return False
    column = "helpful" if helpful else "not_helpful"
    bump = (
        update(LessonFeedback)
        .where(
            col(LessonFeedback.version_id) == version_id, col(LessonFeedback.position) == position
        )
        .values({column: getattr(LessonFeedback, column) + 1})
    )
    if cast(CursorResult[tuple[()]], session.execute(bump)).rowcount:
        return True
    try:
        with session.begin_nested():
            session.add(
                LessonFeedback(
                    version_id=version_id,
                    position=position,
                    helpful=int(helpful),
                    not_helpful=int(not helpful),
                )
            )
    except IntegrityError:  # two answers at once made the row: count on it
        session.execute(bump)
    return True
