"""Published sequence versions and their lessons: which is newest, which the sign-up page
offers, and (for the sending path) each version's lessons, read once per process.

A published version never changes (a change is published as a new version), so a worker
process reads each one once, not once per batch: with two workers on two cores, those reads
were a sixth of the time between batches, in which a worker's SMTP connection sits idle.

What the sign-up page offers can change (a publish, a rollback, staff choosing the courses), so
each web process keeps it for at most OFFERS_FRESH_SECONDS (the `Shelf`): reading it took three
quarters of the time of a page view. A change made in this process empties the shelf when its
transaction commits; one made in any other process or on any other host is seen within
OFFERS_FRESH_SECONDS. The database stays the one truth: nothing has to tell the web processes.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, event, func
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, col, select

from course.db import read_only
from course.errors import UnknownSequence
from course.models import Lesson, OfferedCourse, SequenceVersion, row_id
from course.plan import AFTER_CONVERSATION, Step

# Which published version a reader's row points at. The content hash and publication time are
# part of the key because a database recreated or restored under running workers can hand out
# an id they have already read, for other text; within one database the id alone would do.
VERSION_KEY_COLUMNS = (
    col(SequenceVersion.id),
    col(SequenceVersion.content_hash),
    col(SequenceVersion.published_at),
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
            select(SequenceVersion).where(col(SequenceVersion.id).in_(missing))
        ).all()
        lessons: dict[int, dict[int, Lesson]] = {v: {} for v in missing}
        for lesson in session.scalars(
            select(Lesson).where(col(Lesson.version_id).in_(missing)).order_by(col(Lesson.position))
        ):
            lessons[lesson.version_id][lesson.position] = lesson
        if len(_READ) + len(rows) > _MAX_READ:
            _READ.clear()
        for version in rows:
            version_id = row_id(version)
            entry = Published(version, lessons[version_id])
            found[version_id] = entry
            key = missing[version_id]
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
    _forget_offers()


@dataclass
class LessonPlan:
    """The shape of the sequence versions in a batch, for planning: each version's lessons as
    course.plan steps, and where aftercare starts."""

    steps: dict[int, tuple[Step, ...]]  # version id -> its lessons, in position order
    aftercare: dict[int, list[int]]  # version id -> positions of its aftercare lessons

    @classmethod
    def of(cls, versions: Iterable[Published]) -> LessonPlan:
        steps: dict[int, tuple[Step, ...]] = {}
        aftercare: dict[int, list[int]] = {}
        for entry in versions:
            version_id = row_id(entry.version)
            steps[version_id] = tuple(step_of(lesson) for lesson in entry.lessons.values())
            aftercare[version_id] = [
                p for p, lesson in entry.lessons.items() if lesson.module == "aftercare"
            ]
        return cls(steps=steps, aftercare=aftercare)

    def aftercare_after(self, version_id: int, position: int) -> int | None:
        """The first aftercare lesson after `position`, if there is one."""
        return next((p for p in self.aftercare.get(version_id, ()) if p > position), None)


def step_of(lesson: Lesson) -> Step:
    return Step(
        position=lesson.position,
        delay_days=lesson.delay_days,
        module=lesson.module,
        never_skip=lesson.never_skip,
        anchor=lesson.anchor,
    )


def newest_version(session: Session, slug: str) -> SequenceVersion | None:
    return session.exec(
        select(SequenceVersion)
        .where(col(SequenceVersion.slug) == slug)
        .order_by(col(SequenceVersion.version).desc())
        .limit(1)
    ).first()


def latest_version(session: Session, slug: str) -> SequenceVersion:
    version = newest_version(session, slug)
    if version is None:
        raise UnknownSequence(f"There is no course called {slug!r}.")
    return version


@dataclass(frozen=True)
class Offer:
    """A published course as the sign-up page describes it."""

    version: SequenceVersion
    lessons: int  # every reader gets these (a check-in only goes to readers who set a date)
    days: int  # from the first lesson to the last, at the course's own pace

    @property
    def weeks(self) -> int:
        return max(1, round(self.days / 7))


def published(session: Session) -> list[Offer]:
    """The newest version of every sequence, with its size."""
    newest = (
        select(col(SequenceVersion.slug), func.max(col(SequenceVersion.version)).label("v"))
        .group_by(col(SequenceVersion.slug))
        .subquery()
    )
    everyone = col(Lesson.anchor) != AFTER_CONVERSATION
    rows = session.exec(
        select(
            SequenceVersion,
            func.count(col(Lesson.id)).filter(everyone),
            func.coalesce(func.sum(col(Lesson.delay_days)).filter(everyone), 0),
        )
        .join(
            newest,
            (newest.c.slug == col(SequenceVersion.slug))
            & (newest.c.v == col(SequenceVersion.version)),
        )
        .join(Lesson, col(Lesson.version_id) == col(SequenceVersion.id))
        .group_by(col(SequenceVersion.id))
        .order_by(col(SequenceVersion.slug))
    ).all()
    return [Offer(v, int(n), int(days)) for v, n, days in rows]


def offered(
    session: Session, sequences: dict[str, str], default_sequence: str
) -> dict[str, list[Offer]]:
    """locale -> the courses the sign-up page offers in it, in order. Staff choose them
    (OfferedCourse); until they have, the one `sequences` names for each language, if it is
    published in that language, and the default course in its own language."""
    return Shelf.read(session).offered(sequences, default_sequence)


@dataclass(frozen=True)
class Shelf:
    """The published courses and the staff's choice among them, as read at one moment: what the
    sign-up page and `POST /enroll` need, shared read-only by every request of a process."""

    courses: tuple[Offer, ...]
    picked: tuple[tuple[str, str], ...]  # (locale, slug) in the order staff chose
    _by_slug: dict[str, Offer] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_by_slug", {o.version.slug: o for o in self.courses})

    @classmethod
    def read(cls, session: Session) -> Shelf:
        picked = session.exec(
            select(OfferedCourse).order_by(col(OfferedCourse.locale), col(OfferedCourse.position))
        ).all()
        return cls(tuple(published(session)), tuple((row.locale, row.slug) for row in picked))

    def course(self, slug: str) -> Offer | None:
        return self._by_slug.get(slug)

    def offered(self, sequences: dict[str, str], default_sequence: str) -> dict[str, list[Offer]]:
        """What `offered()` says, from what was read."""
        chosen: dict[str, list[Offer]] = {}
        if self.picked:
            for locale, slug in self.picked:
                offer = self._by_slug.get(slug)
                if offer is not None and offer.version.locale == locale:
                    chosen.setdefault(locale, []).append(offer)
            return chosen
        for locale, slug in sequences.items():
            offer = self._by_slug.get(slug)
            if offer is not None and offer.version.locale == locale:
                chosen[locale] = [offer]
        default = self._by_slug.get(default_sequence)
        if default and default.version.locale not in chosen:
            chosen[default.version.locale] = [default]
        return chosen


# How long a web process serves what it read of the offered courses before reading it again:
# the longest a change made elsewhere takes to reach the sign-up page (README, Operations).
OFFERS_FRESH_SECONDS = 1.0


@dataclass
class _Kept:
    shelf: Shelf
    read_at: float  # time.monotonic()


_shelves: dict[Engine, _Kept] = {}
_refreshing = threading.Lock()
# Bumped by every change this process commits: a read begun before it must not be kept after.
_generation = 0


def shelf(engine: Engine) -> Shelf:
    """The offered courses of `engine`'s database, read at most OFFERS_FRESH_SECONDS ago. While
    one thread reads them again, the others go on with the copy they have, so a page view never
    queues behind that read; a database error propagates and nothing is kept."""
    kept = _shelves.get(engine)
    now = time.monotonic()
    if kept is not None and now - kept.read_at < OFFERS_FRESH_SECONDS:
        return kept.shelf
    if kept is not None and not _refreshing.acquire(blocking=False):
        return kept.shelf
    if kept is None:
        _refreshing.acquire()
    try:
        kept = _shelves.get(engine)  # another thread may have read it while this one waited
        if kept is not None and time.monotonic() - kept.read_at < OFFERS_FRESH_SECONDS:
            return kept.shelf
        generation, read_at = _generation, time.monotonic()
        # Read-only: on SQLite a page view must never wait for, or hold, the write lock.
        with Session(read_only(engine), expire_on_commit=False) as session:
            fresh = Shelf.read(session)
            session.commit()  # ends the read transaction; the rows stay loaded, detached
        if generation == _generation:
            _shelves[engine] = _Kept(fresh, read_at)
        return fresh
    finally:
        _refreshing.release()


def kept_shelf(engine: Engine) -> Shelf | None:
    """The shelf of `engine` if this process read it less than OFFERS_FRESH_SECONDS ago, else
    None: never reads, never waits (for a caller on an event loop)."""
    kept = _shelves.get(engine)
    if kept is not None and time.monotonic() - kept.read_at < OFFERS_FRESH_SECONDS:
        return kept.shelf
    return None


def _forget_offers() -> None:
    global _generation  # noqa: PLW0603  (one counter for the process, as the shelves are)
    _generation += 1
    _shelves.clear()


_CHANGED = "homeward.offers_changed"


def offers_changed(session: Session) -> None:
    """Say that `session` changes what the sign-up page offers: when it commits, this process
    reads the offered courses again (other processes within OFFERS_FRESH_SECONDS)."""
    session.info[_CHANGED] = True


@event.listens_for(OrmSession, "after_commit")
def _after_commit(session: OrmSession) -> None:
    if session.info.pop(_CHANGED, False):
        _forget_offers()


@event.listens_for(OrmSession, "after_rollback")
def _after_rollback(session: OrmSession) -> None:
    session.info.pop(_CHANGED, None)
