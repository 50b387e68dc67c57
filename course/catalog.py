"""Published sequence versions and their lessons, as the sending path reads them.

A published version never changes (a change is published as a new version), so a worker
process reads each one once, not once per batch: with two workers on two cores, those reads
were a sixth of the time between batches, in which a worker's SMTP connection sits idle.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlmodel import Session

from course.models import Lesson, SequenceVersion

# Which published version a reader's row points at. The content hash and publication time are
# part of the key because a database recreated or restored under running workers can hand out
# an id they have already read, for other text; within one database the id alone would do.
VERSION_KEY_COLUMNS = (
    SequenceVersion.id,
    SequenceVersion.content_hash,
    SequenceVersion.published_at,
)
VersionKey = tuple[int, str, datetime]


@dataclass(frozen=True)
class Published:
    """A published version and its lessons, shared by every batch of a process: read only."""

    version: SequenceVersion
    lessons: dict[int, Lesson]  # by position, in position order


_READ: dict[VersionKey, Published] = {}
_MAX_READ = 256  # versions; far more than a centre publishes, but never unbounded


def versions(session: Session, keys: Iterable[VersionKey]) -> dict[int, Published]:
    """The versions with these keys and their lessons, by version id; detached from `session`,
    with every attribute loaded, so they can be read after it closes."""
    found: dict[int, Published] = {}
    missing: dict[int, VersionKey] = {}
    for key in set(keys):
        hit = _READ.get(key)
        if hit is None:
            missing[key[0]] = key
        else:
            found[key[0]] = hit
    if missing:
        rows = session.scalars(
            select(SequenceVersion).where(SequenceVersion.id.in_(missing))  # type: ignore[union-attr]
        ).all()
        lessons: dict[int, dict[int, Lesson]] = {v: {} for v in missing}
        for lesson in session.scalars(
            select(Lesson)
            .where(Lesson.version_id.in_(missing))  # type: ignore[attr-defined]
            .order_by(Lesson.position)  # type: ignore[arg-type]
        ):
            lessons[lesson.version_id][lesson.position] = lesson
        if len(_READ) + len(rows) > _MAX_READ:
            _READ.clear()
        for version in rows:
            entry = Published(version, lessons[version.id])  # type: ignore[index]
            found[version.id] = entry  # type: ignore[index]
            key = missing[version.id]  # type: ignore[index]
            if (version.id, version.content_hash, version.published_at) == key:
                _READ[key] = entry  # (not if the database changed under us between the reads)
            # Shared from now on: no session may expire or change them.
            session.expunge(version)
            for lesson in entry.lessons.values():
                session.expunge(lesson)
    return found


def forget() -> None:
    """Drop everything read so far (each test starts from an empty catalog)."""
    _READ.clear()


@dataclass
class LessonPlan:
    """The shape of the sequence versions in a batch: each lesson's delay, where aftercare
    starts, and which lessons a reader who has switched to aftercare still gets."""

    delays: dict[tuple[int, int], int]
    aftercare: dict[int, list[int]]  # version id -> positions of its aftercare lessons
    # version id -> positions sent after the switch to aftercare: aftercare and never-skip.
    after_switch: dict[int, list[int]]

    @classmethod
    def of(cls, versions: Iterable[Published]) -> LessonPlan:
        delays: dict[tuple[int, int], int] = {}
        aftercare: dict[int, list[int]] = {}
        after_switch: dict[int, list[int]] = {}
        for entry in versions:
            for position, lesson in entry.lessons.items():
                delays[(lesson.version_id, position)] = lesson.delay_days
                if lesson.module == "aftercare":
                    aftercare.setdefault(lesson.version_id, []).append(position)
                if lesson.module == "aftercare" or lesson.never_skip:
                    after_switch.setdefault(lesson.version_id, []).append(position)
        return cls(delays=delays, aftercare=aftercare, after_switch=after_switch)

    def aftercare_after(self, version_id: int, position: int) -> int | None:
        """The first aftercare lesson after `position`, if there is one."""
        return next((p for p in self.aftercare.get(version_id, ()) if p > position), None)

    def next_if_switched(self, version_id: int, position: int) -> int | None:
        """The lesson after `position` for a reader who has switched to aftercare: the next
        aftercare lesson, or a never-skip lesson (overdose, safety) they have not had yet."""
        return next((p for p in self.after_switch.get(version_id, ()) if p > position), None)
