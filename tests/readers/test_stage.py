""" "My loved one has started treatment": the switch to aftercare holds whenever it is clicked,
including while a lesson is in flight, and never loses or repeats a lesson."""

from __future__ import annotations

import pytest
from sqlmodel import col, select

from course.authoring import load_sequence, publish
from course.db import engine_for, session_scope
from course.models import Delivery, Enrollment
from course.readers.preferences import start_aftercare
from course.sending import send_batch, tick
from course.sending.mailer import Mailer, SmtpTarget
from course.suppression import unsubscribe
from course.tokens import Purpose
from tests.support import lessons_to, linked_id, run_days, signup, stage_token


def switch(settings, clock, token):
    enrollment_id = linked_id(settings, Purpose.STAGE, token, clock)
    with session_scope(engine_for(settings.database_url)) as session:
        enrollment = start_aftercare(session, settings, clock, enrollment_id=enrollment_id)
        session.expunge(enrollment)
    return enrollment


def test_lessons_before_aftercare_carry_the_switch_and_aftercare_lessons_do_not(
    settings, clock, smtp, deliver, mini_course
):
    signup(settings, clock, deliver, smtp, "reader@example.org")
    run_days(clock, deliver, 7)
    received = lessons_to(smtp, "reader@example.org")
    assert [m["Subject"] for m in received] == [
        "Welcome",
        "Lesson two of the mini course",
        "The last lesson",
    ]
    first, second, last = (stage_token(m) for m in received)
    assert first and second and last is None
    html = received[0].get_body(preferencelist=("html",)).get_content()
    assert "My loved one has started treatment</a>" in html


def test_switching_between_lessons_skips_to_aftercare_from_the_next_lesson(
    settings, clock, smtp, deliver, mini_course
):
    signup(settings, clock, deliver, smtp, "reader@example.org")
    deliver()
    [welcome] = lessons_to(smtp, "reader@example.org")
    enrollment = switch(settings, clock, stage_token(welcome))
    assert enrollment.started_treatment_at is not None and enrollment.next_position == 3
    switch(settings, clock, stage_token(welcome))  # a second click changes nothing
    run_days(clock, deliver, 7)
    received = lessons_to(smtp, "reader@example.org")
    assert [m["Subject"] for m in received] == ["Welcome", "The last lesson"]
    with session_scope(engine_for(settings.database_url)) as session:
        assert session.exec(select(Enrollment)).one().status == "completed"


def test_switching_while_a_lesson_is_in_flight_sends_it_then_moves_to_aftercare(
    settings, clock, smtp, deliver, mini_course
):
    """The click lands after a worker claimed lesson 1 but before it was sent."""
    signup(settings, clock, deliver, smtp, "reader@example.org")
    engine = engine_for(settings.database_url)
    # The reader had a stage link from an earlier email; here we mint the same link directly.
    with session_scope(engine) as session:
        link_key = session.exec(select(Enrollment.link_key)).one()
    # Lesson 1 is due: the tick claims it (the enrollment has no due time while it is in flight).
    [batch] = tick(engine, settings, clock)
    from course.tokens import make_token

    switched = switch(
        settings, clock, make_token(settings.secret_key, Purpose.STAGE, link_key, clock=clock)
    )
    assert switched.next_due_at is None and switched.next_position == 1
    mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
    try:
        assert send_batch(engine, settings, clock, mailer=mailer, ids=batch).sent == batch
    finally:
        mailer.close()
    [welcome] = lessons_to(smtp, "reader@example.org")
    assert stage_token(welcome) is None, "no point offering a switch that was already made"
    run_days(clock, deliver, 7)
    received = lessons_to(smtp, "reader@example.org")
    assert [m["Subject"] for m in received] == ["Welcome", "The last lesson"]
    with session_scope(engine) as session:
        positions = session.exec(
            select(Delivery.position)
            .where(Delivery.kind == "lesson")
            .order_by(col(Delivery.position))
        ).all()
    assert positions == [1, 3]


def test_switching_after_unsubscribing_changes_nothing(settings, clock, smtp, deliver, mini_course):
    signup(settings, clock, deliver, smtp, "reader@example.org")
    deliver()
    [welcome] = lessons_to(smtp, "reader@example.org")
    token = stage_token(welcome)
    with session_scope(engine_for(settings.database_url)) as session:
        assert token is not None
        unsubscribe(session, clock, linked_id(settings, Purpose.STAGE, token))
    enrollment = switch(settings, clock, token)
    assert enrollment.status == "unsubscribed" and enrollment.started_treatment_at is None
    run_days(clock, deliver, 7)
    assert len(lessons_to(smtp, "reader@example.org")) == 1


# --- never-skip lessons: overdose and safety reach everyone ---------------------------------

SAFETY_COURSE = {
    "01-hello.md": ("recognize", False),
    "02-overdose.md": ("recognize", True),
    "03-talking.md": ("act", False),
    "04-safety.md": ("act", True),
    "05-aftercare.md": ("aftercare", False),
    "06-caring.md": ("aftercare", False),
}


# After a switch at lesson 1: the never-skip lessons, then aftercare; only "talking" is skipped.
EVERY_LESSON_BUT_TALKING = [
    "Lesson hello",
    "Lesson overdose",
    "Lesson safety",
    "Lesson aftercare",
    "Lesson caring",
]


@pytest.fixture
def safety_course(settings, clock, tmp_path) -> str:
    """Six lessons: two of them (an overdose and a safety lesson) marked never_skip."""
    folder = tmp_path / "safety-course"
    folder.mkdir()
    (folder / "sequence.toml").write_text(
        'title = "Safety course"\nlocale = "en"\nsender_name = "Homeward Test"\n'
    )
    for name, (module, never_skip) in SAFETY_COURSE.items():
        key = name[3:-3]
        (folder / name).write_text(
            "---\n"
            f"key: {key}\nsubject: Lesson {key}\npreheader: A short note.\n"
            f"delay_days: {0 if name.startswith('01') else 2}\n"
            f"module: {module}\nnever_skip: {str(never_skip).lower()}\n"
            "sources:\n  - title: CDC\n---\nThis is the lesson.\n"
        )
    with session_scope(engine_for(settings.database_url)) as session:
        publish(session, load_sequence(folder), clock)
    settings.default_sequence = "safety-course"
    return "safety-course"


def test_switching_after_lesson_one_still_sends_every_never_skip_lesson_once(
    settings, clock, smtp, deliver, safety_course
):
    signup(settings, clock, deliver, smtp, "reader@example.org")
    deliver()
    [first] = lessons_to(smtp, "reader@example.org")
    enrollment = switch(settings, clock, stage_token(first))
    assert enrollment.next_position == 2, "the overdose lesson is next, not aftercare"
    run_days(clock, deliver, 20)
    received = [m["Subject"] for m in lessons_to(smtp, "reader@example.org")]
    assert received == EVERY_LESSON_BUT_TALKING


def test_switching_with_a_lesson_in_flight_still_sends_the_never_skip_lessons_after_it(
    settings, clock, smtp, deliver, safety_course
):
    signup(settings, clock, deliver, smtp, "reader@example.org")
    deliver()
    [first] = lessons_to(smtp, "reader@example.org")
    engine = engine_for(settings.database_url)
    clock.advance(days=2)
    [batch] = tick(engine, settings, clock)  # lesson 2 (overdose) is claimed
    switch(settings, clock, stage_token(first))
    mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
    try:
        assert send_batch(engine, settings, clock, mailer=mailer, ids=batch).sent == batch
    finally:
        mailer.close()
    run_days(clock, deliver, 20)
    received = [m["Subject"] for m in lessons_to(smtp, "reader@example.org")]
    assert received == EVERY_LESSON_BUT_TALKING
    with session_scope(engine) as session:
        positions = session.exec(
            select(Delivery.position)
            .where(Delivery.kind == "lesson")
            .order_by(col(Delivery.position))
        ).all()
    assert positions == [1, 2, 4, 5, 6]


def test_switching_after_the_never_skip_lessons_goes_straight_to_aftercare(
    settings, clock, smtp, deliver, safety_course
):
    signup(settings, clock, deliver, smtp, "reader@example.org")
    run_days(clock, deliver, 6.5)  # lessons 1-4 (the last at day 6)
    received = lessons_to(smtp, "reader@example.org")
    assert [m["Subject"] for m in received][-1] == "Lesson safety"
    switch(settings, clock, stage_token(received[-1]))
    run_days(clock, deliver, 10)
    assert [m["Subject"] for m in lessons_to(smtp, "reader@example.org")][4:] == [
        "Lesson aftercare",
        "Lesson caring",
    ]
