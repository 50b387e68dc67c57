"""Live edits reach people already enrolled: publishing a new version of a course moves the
readers in the middle of it forward with it, by lesson key, through the real sending path (tick
and send, an injected clock, a real SMTP server). Each rule is read from the emails readers get:
an added lesson after their place comes, one before it does not, an edited one comes in its new
text, a removed one never, nobody gets one twice (also when it moved later), a lesson in flight
goes out as claimed, a rollback is one more version, and a reordered reader moves too."""

from __future__ import annotations

import shutil
import uuid
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlmodel import col, select

from course import stats
from course.authoring import SequenceSpec, load_sequence, publish
from course.clock import as_utc
from course.db import engine_for, session_scope
from course.models import Delivery, Enrollment, SequenceVersion, row_id
from course.readers.preferences import set_dates, set_pace
from tests.support import FIXTURES, enrolled, lessons_to, run_days, signup

COURSE = FIXTURES / "live-course"
EDITS = FIXTURES / "live-course-edits"  # lessons later versions add, or rewrite
FIRST = ("welcome", "signs", "talking", "safety", "care")


@pytest.fixture
def live_course(settings, clock):
    publish_version(settings, clock, load_sequence(COURSE))
    settings.default_sequence = "live-course"
    return "live-course"


def version(tmp_path: Path, *lessons: str, rewritten: tuple[str, ...] = ()) -> SequenceSpec:
    """The course as staff changed it: these lessons in this order (the first version's, or
    those of live-course-edits), the `rewritten` ones in their new text."""
    folder = tmp_path / uuid.uuid4().hex / "live-course"
    folder.mkdir(parents=True)
    shutil.copy(COURSE / "sequence.toml", folder)
    for number, key in enumerate(lessons, start=1):
        source = EDITS if key in rewritten or not list(COURSE.glob(f"*-{key}.md")) else COURSE
        [path] = source.glob(f"*-{key}.md")
        shutil.copy(path, folder / f"{number:02d}-{key}.md")
    return load_sequence(folder)


def publish_version(settings, clock, spec: SequenceSpec) -> int:
    with session_scope(engine_for(settings.database_url)) as session:
        published, created = publish(session, spec, clock)
        assert created
        return published.version


def reading(settings, clock, deliver, smtp, email: str) -> int:
    """A reader who signed up, confirmed and got the first lesson; their enrollment's id."""
    enrollment_id = signup(settings, clock, deliver, smtp, email)
    deliver()
    return enrollment_id


def got(smtp, reader: str) -> list[str]:
    """The lessons a reader received, in order, as their subjects name them."""
    return [str(m["Subject"]).removeprefix("Lesson ") for m in lessons_to(smtp, reader)]


def enrollment(settings, enrollment_id: int) -> Enrollment:
    with session_scope(engine_for(settings.database_url)) as session:
        found = session.get(Enrollment, enrollment_id)
        assert found is not None
        return found


def on_version(settings, enrollment_id: int) -> int:
    with session_scope(engine_for(settings.database_url)) as session:
        number = session.exec(
            select(SequenceVersion.version)
            .join(Enrollment, col(Enrollment.version_id) == SequenceVersion.id)
            .where(Enrollment.id == enrollment_id)
        ).one()
        return number


def one_day(clock, deliver) -> None:
    run_days(clock, deliver, 1)


def test_readers_in_the_middle_get_what_was_added_after_them_and_edited_never_what_was_removed(
    settings, clock, smtp, deliver, live_course, tmp_path
):
    ahead = reading(settings, clock, deliver, smtp, "ahead@example.org")
    one_day(clock, deliver)
    middle = reading(settings, clock, deliver, smtp, "middle@example.org")
    one_day(clock, deliver)
    behind = reading(settings, clock, deliver, smtp, "behind@example.org")
    enrolled(settings, clock, ["pending@example.org"])  # not confirmed yet
    assert got(smtp, "ahead@example.org") == ["welcome", "signs", "talking"]
    assert got(smtp, "middle@example.org") == ["welcome", "signs"]
    assert got(smtp, "behind@example.org") == ["welcome"]

    # A lesson added first (before everyone's place), talking rewritten, a lesson added after
    # it, the safety lesson removed.
    edited = version(
        tmp_path, "early", "welcome", "signs", "talking", "late", "care", rewritten=("talking",)
    )
    assert publish_version(settings, clock, edited) == 2
    for reader in (ahead, middle, behind):
        assert on_version(settings, reader) == 2  # moved at once: they were waiting
    # A preference changed after the move plans from what the reader has had: the lesson added
    # before their place stays behind them.
    with session_scope(engine_for(settings.database_url)) as session:
        set_pace(session, settings, clock, enrollment_id=middle, days=2)
    pending = signup_confirmed_later(settings, clock, deliver, smtp, "pending@example.org")
    run_days(clock, deliver, 12)

    assert got(smtp, "ahead@example.org") == ["welcome", "signs", "talking", "late (added)", "care"]
    assert got(smtp, "middle@example.org") == [
        "welcome",
        "signs",
        "talking, rewritten",
        "late (added)",
        "care",
    ]
    assert got(smtp, "behind@example.org") == [
        "welcome",
        "signs",
        "talking, rewritten",
        "late (added)",
        "care",
    ]
    assert got(smtp, "pending@example.org") == [
        "early (added)",
        "welcome",
        "signs",
        "talking, rewritten",
        "late (added)",
        "care",
    ]
    for reader in (ahead, middle, behind, pending):
        assert enrollment(settings, reader).status == "completed"
    assert len(set(smtp.message_ids())) == len(smtp.received)


def signup_confirmed_later(settings, clock, deliver, smtp, email: str) -> int:
    """A reader who signed up before the new version and confirms after it."""
    from course.readers.confirm import confirm
    from course.tokens import Purpose
    from tests.support import confirm_link, linked_id

    clock.advance(seconds=settings.lease_seconds + 1)
    deliver()  # their confirmation email
    token = confirm_link(smtp.to(email)[-1]).rsplit("/", 1)[1]
    enrollment_id = linked_id(settings, Purpose.CONFIRM, token, clock)
    with session_scope(engine_for(settings.database_url)) as session:
        confirm(session, settings, clock, enrollment_id=enrollment_id)
    return enrollment_id


def test_a_lesson_read_and_moved_later_is_not_sent_again(
    settings, clock, smtp, deliver, live_course, tmp_path
):
    reader = reading(settings, clock, deliver, smtp, "reader@example.org")
    one_day(clock, deliver)
    assert got(smtp, "reader@example.org") == ["welcome", "signs"]
    publish_version(
        settings, clock, version(tmp_path, "welcome", "talking", "safety", "signs", "care")
    )
    newcomer = reading(settings, clock, deliver, smtp, "new@example.org")
    run_days(clock, deliver, 8)
    assert got(smtp, "reader@example.org") == ["welcome", "signs", "talking", "safety", "care"]
    assert got(smtp, "new@example.org") == ["welcome", "talking", "safety", "signs", "care"]
    # Counting up from their next lesson would have sent "signs" again: their order is their own.
    assert enrollment(settings, reader).reordered
    assert not enrollment(settings, newcomer).reordered


def test_a_lesson_in_flight_goes_out_as_claimed_and_the_reader_moves_right_after(
    settings, clock, smtp, deliver, live_course, tmp_path, queued
):
    from course.sending import tick

    reader = reading(settings, clock, deliver, smtp, "reader@example.org")
    run_days(clock, deliver, 1)
    assert got(smtp, "reader@example.org") == ["welcome", "signs"]
    clock.advance(days=1)
    engine = engine_for(settings.database_url)
    in_flight = tick(engine, settings, clock)  # talking is claimed; no worker has sent it yet
    assert in_flight
    edited = version(
        tmp_path, "welcome", "signs", "talking", "late", "safety", "care", rewritten=("talking",)
    )
    publish_version(settings, clock, edited)
    assert on_version(settings, reader) == 1  # not while its lesson is in flight
    assert tick(engine, settings, clock) == []  # and nothing else is claimed for them meanwhile
    queued.extend(in_flight)
    deliver()
    assert got(smtp, "reader@example.org")[-1] == "talking"  # the text it was claimed with
    run_days(clock, deliver, 5)
    assert got(smtp, "reader@example.org") == [
        "welcome",
        "signs",
        "talking",
        "late (added)",
        "safety",
        "care",
    ]
    assert on_version(settings, reader) == 2
    with session_scope(engine) as session:
        rows = session.exec(
            select(SequenceVersion.version, Delivery.position)
            .join(Delivery, col(Delivery.version_id) == SequenceVersion.id)
            .where(Delivery.enrollment_id == reader, Delivery.kind == "lesson")
            .order_by(col(Delivery.id))
        ).all()
    # The in-flight row names the version it was claimed for; the next ones the new version.
    assert [tuple(r) for r in rows] == [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (2, 6)]


def test_a_rollback_is_one_more_version_and_nobody_gets_a_lesson_twice(
    settings, clock, smtp, deliver, live_course, tmp_path
):
    first = reading(settings, clock, deliver, smtp, "first@example.org")
    run_days(clock, deliver, 2)
    second = reading(settings, clock, deliver, smtp, "second@example.org")
    with_late = version(
        tmp_path, "welcome", "signs", "talking", "late", "safety", "care", rewritten=("talking",)
    )
    assert publish_version(settings, clock, with_late) == 2
    one_day(clock, deliver)
    assert got(smtp, "first@example.org") == ["welcome", "signs", "talking", "late (added)"]
    assert got(smtp, "second@example.org") == ["welcome", "signs"]

    assert publish_version(settings, clock, load_sequence(COURSE)) == 3  # back to the first text
    one_day(clock, deliver)
    assert got(smtp, "first@example.org")[-1] == "safety"
    assert got(smtp, "second@example.org")[-1] == "talking"  # the first text again

    # Forward again: "late" is back; the first reader had it two versions ago.
    assert publish_version(settings, clock, with_late) == 4
    run_days(clock, deliver, 4)
    assert got(smtp, "first@example.org") == [
        "welcome",
        "signs",
        "talking",
        "late (added)",
        "safety",
        "care",
    ]
    assert got(smtp, "second@example.org") == [
        "welcome",
        "signs",
        "talking",
        "late (added)",
        "safety",
        "care",
    ]
    assert {on_version(settings, first), on_version(settings, second)} == {4}


def test_a_reader_with_a_conversation_date_moves_by_what_they_have_had(
    settings, clock, smtp, deliver, live_course, tmp_path
):
    reader = reading(settings, clock, deliver, smtp, "reader@example.org")
    with session_scope(engine_for(settings.database_url)) as session:
        set_dates(
            session,
            settings,
            clock,
            enrollment_id=reader,
            conversation_on=date(2026, 1, 10),
            treatment_on=None,
        )
    one_day(clock, deliver)
    # Preparing lessons first: talking before signs.
    assert got(smtp, "reader@example.org") == ["welcome", "talking"]
    due_before = enrollment(settings, reader).next_due_at
    edited = version(
        tmp_path, "welcome", "signs", "talking", "late", "safety", "care", rewritten=("talking",)
    )
    publish_version(settings, clock, edited)
    deliver()  # the tick moves them from their own history, and plans their next lesson again
    moved = enrollment(settings, reader)
    assert moved.reordered and moved.next_due_at == due_before
    assert on_version(settings, reader) == 2
    run_days(clock, deliver, 10)
    # Talking is not sent again in its new text; the added lesson comes after the conversation.
    assert got(smtp, "reader@example.org") == [
        "welcome",
        "talking",
        "safety",
        "signs",
        "late (added)",
        "care",
    ]


def test_the_dashboard_times_the_lessons_sent_last_across_every_version(
    settings, clock, smtp, deliver, live_course, tmp_path, monkeypatch
):
    """How late lessons go out is read from the course's lessons sent last, whichever version
    each went out on."""
    monkeypatch.setattr(stats, "LAG_WINDOW", 2)
    ahead = reading(settings, clock, deliver, smtp, "ahead@example.org")
    one_day(clock, deliver)
    assert publish_version(settings, clock, version(tmp_path, "early", *FIRST)) == 2
    one_day(clock, deliver)
    assert got(smtp, "ahead@example.org") == ["welcome", "signs", "talking"]
    engine = engine_for(settings.database_url)
    with session_scope(engine) as session:
        lessons = session.exec(
            select(Delivery).where(
                Delivery.enrollment_id == ahead,
                Delivery.kind == "lesson",
                Delivery.status == "sent",
            )
        ).all()
        for d in lessons:  # each lesson went out its id's number of seconds late
            d.sent_at = as_utc(d.created_at) + timedelta(seconds=row_id(d))
            session.add(d)
        on = {row_id(d): d.version_id for d in lessons}
    _, second, last = sorted(on)
    assert on[second] != on[last], "the last two lessons went out on two versions"
    figures = stats.dashboard(engine, "live-course", now=clock.now())
    assert figures is not None
    assert (figures.lag_sample, figures.lag_p50) == (2, (second + last) / 2)
