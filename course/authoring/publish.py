"""Publish a checked sequence as a new version in the database. A published version never
changes: a change is published as a new version, and the readers in the middle of the course
move onto it (course.versions)."""

from __future__ import annotations

from sqlmodel import Session

from course.authoring.load import SequenceSpec
from course.catalog import newest_version, offers_changed
from course.clock import Clock
from course.models import Lesson, SequenceVersion, row_id
from course.render import compile_lesson
from course.versions import move_readers


def publish(session: Session, sequence: SequenceSpec, clock: Clock) -> tuple[SequenceVersion, bool]:
    """Store `sequence` as its next version and move the course's readers onto it; (version,
    created). Publishing unchanged content again returns the current version instead of making
    a copy."""
    latest = newest_version(session, sequence.slug)
    if latest is not None and latest.content_hash == sequence.content_hash:
        return latest, False
    version = SequenceVersion(
        slug=sequence.slug,
        version=(latest.version + 1) if latest else 1,
        title=sequence.title,
        description=sequence.description,
        locale=sequence.locale,
        sender_name=sequence.sender_name,
        content_hash=sequence.content_hash,
        published_at=clock.now(),
    )
    session.add(version)
    session.flush()
    offers_changed(session)
    session.add_all(
        Lesson(
            version_id=row_id(version),
            position=lesson.position,
            key=lesson.key,
            subject=lesson.subject,
            preheader=lesson.preheader,
            delay_days=lesson.delay_days,
            module=lesson.module,
            never_skip=lesson.never_skip,
            anchor=lesson.anchor,
            heading=lesson.heading,
            body=lesson.body,
            sources=lesson.sources,
        )
        for lesson in sequence.lessons
    )
    for lesson in sequence.lessons:
        compile_lesson(lesson.body)  # fail now, not in a worker, if the template cannot compile
    session.flush()
    # In the same transaction: if publishing fails, nobody has moved.
    move_readers(session, slug=sequence.slug, to_version_id=row_id(version), now=clock.now())
    return version, True
