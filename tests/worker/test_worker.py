"""The broker path with a real Celery worker and beat over a real Redis: nothing is lost and
nothing is sent twice when a worker is killed mid-batch, Redis is flushed, or two beats run."""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import redis
from fastapi.testclient import TestClient
from sqlmodel import col, select

from course.cli.embedded_redis import EmbeddedRedis
from course.clock import ManualClock, SystemClock, as_utc
from course.db import engine_for, session_scope
from course.models import (
    Delivery,
    Enrollment,
    Subscriber,
    WebhookEndpoint,
    WebhookMessage,
    row_id,
)
from course.queue import PURGE_TASK, enqueue_sends
from course.queue import app as queue
from course.sending import tick
from tests.support import active_readers, confirm_link, enrolled, wait_for
from tests.worker.conftest import LEASE, lesson_count


def test_signup_to_last_lesson_through_the_broker(settings, smtp, mini_course, processes):
    processes("worker", concurrency=2)
    processes("beat")
    from course.web import create_app

    with TestClient(create_app(settings, SystemClock())) as client:
        assert (
            client.post(
                "/enroll", json={"email": "e2e@example.org", "first_name": "Jo"}
            ).status_code
            == 202
        )
        wait_for(lambda: len(smtp.to("e2e@example.org")) == 1, 20, "the confirmation email")
        assert client.get(confirm_link(smtp.to("e2e@example.org")[0])).status_code == 200
    wait_for(lambda: lesson_count(smtp)["e2e@example.org"] >= 3, 30, "all three lessons")
    subjects = [m["Subject"] for m in smtp.to("e2e@example.org")]
    assert subjects[1:] == ["Welcome, Jo", "Lesson two of the mini course", "The last lesson"]

    def completed() -> bool:
        with session_scope(engine_for(settings.database_url)) as session:
            return session.exec(select(Enrollment)).one().status == "completed"

    # The server has the last lesson a moment before the worker records it as sent.
    wait_for(completed, 10, "the course to be marked completed")


def test_a_worker_killed_mid_batch_loses_nothing(settings, smtp, mini_course, processes):
    readers = active_readers(settings, SystemClock(), 30)
    smtp.delay = 0.05  # slow enough that the kill lands in the middle of a batch
    worker = processes("worker", name="doomed", concurrency=1)
    processes("beat")
    wait_for(lambda: sum(lesson_count(smtp).values()) >= 6, 30, "the first lessons to go out")
    os.killpg(worker.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    worker.wait()
    sent_before_kill = sum(lesson_count(smtp).values())
    assert sent_before_kill < 90, "the worker finished before it could be killed"
    smtp.delay = 0
    processes("worker", name="rescuer", concurrency=2)
    # What the dead worker held (and the tasks it had prefetched) reaches its readers once its
    # lease runs out: within the lease and a tick or two, not minutes.
    wait_for(lambda: set(lesson_count(smtp)) == set(readers), 30, "every reader's first lesson")
    assert time.monotonic() - killed_at < LEASE + 5
    wait_for(
        lambda: all(lesson_count(smtp)[r] >= 3 for r in readers),
        60,
        "every lesson for every reader",
    )
    counts = lesson_count(smtp)
    duplicates = sum(n - 3 for n in counts.values())
    # Allowed: one message accepted by the server just before the kill, not yet recorded.
    assert duplicates <= 1, counts
    assert set(counts) == set(readers)


def test_redis_flushed_with_work_queued_loses_nothing(
    settings, smtp, mini_course, processes, redis_url
):
    readers = active_readers(settings, SystemClock(), 20)
    engine = engine_for(settings.database_url)
    batches = tick(engine, settings, SystemClock())
    enqueue_sends(batches)
    assert redis.Redis.from_url(redis_url).llen("celery") == len(batches) > 0
    redis.Redis.from_url(redis_url).flushdb()  # every queued message is gone
    processes("worker", concurrency=2)
    processes("beat")
    wait_for(
        lambda: all(lesson_count(smtp)[r] >= 3 for r in readers), 60, "every lesson after the flush"
    )
    assert all(n == 3 for n in lesson_count(smtp).values())


def test_redis_restarted_empty_mid_batch_leaves_every_worker_running(
    settings, smtp, mini_course, env, processes
):
    # A Redis of our own, to kill: never the shared one.
    own = EmbeddedRedis().start()
    env["COURSE_REDIS_URL"] = settings.redis_url = own.url
    restarted = threading.Event()

    def restart_redis_while_a_message_is_in_flight() -> None:
        if not restarted.is_set():
            restarted.set()
            own.stop()
            own.start()  # the same port, empty

    try:
        readers = active_readers(settings, SystemClock(), 12)
        smtp.on_data = restart_redis_while_a_message_is_in_flight
        workers = [processes("worker", name=f"w{n}", concurrency=2) for n in (1, 2)]
        processes("beat")
        wait_for(restarted.is_set, 30, "a lesson in flight when Redis restarts")
        wait_for(
            lambda: all(lesson_count(smtp)[r] >= 3 for r in readers),
            60,
            "every lesson after the restart",
        )
        # Before, kombu's put-back through a closed channel ended each worker that had a task
        # in flight ("Unrecoverable error"), and nothing sent again until someone restarted it.
        assert [w.poll() for w in workers] == [None, None]
        counts = lesson_count(smtp)
        assert sum(n - 3 for n in counts.values()) <= 1, counts  # one message in flight at most
    finally:
        smtp.on_data = None
        own.stop()


def test_two_beats_at_once_send_nothing_twice(settings, smtp, mini_course, processes):
    readers = active_readers(settings, SystemClock(), 40)
    processes("worker", concurrency=2)
    processes("beat", name="b1")
    processes("beat", name="b2")
    wait_for(
        lambda: all(lesson_count(smtp)[r] >= 3 for r in readers), 60, "every lesson with two beats"
    )
    assert all(n == 3 for n in lesson_count(smtp).values()), lesson_count(smtp)


def test_the_hourly_task_run_by_a_worker_deletes_what_is_kept_no_longer(
    settings, mini_course, processes
):
    """The beat's hourly task, sent to a real worker: a sign-up nobody confirmed in 40 days
    goes, and so does a webhook post that went through 40 days ago. A confirmed reader, a post
    of today and a message still waiting to be posted, however old, stay."""
    engine = engine_for(settings.database_url)
    now = SystemClock().now()
    long_ago = now - timedelta(days=40)
    [reader] = active_readers(settings, SystemClock(), 1)  # (it confirms every sign-up)
    enrolled(settings, ManualClock(long_ago), ["forgot@example.org"])
    with session_scope(engine) as session:
        hook = WebhookEndpoint(
            url="https://crm.example.org/hooks",
            events=",enrolled,",
            secret="whsec_",
            created_at=now,
        )
        session.add(hook)
        session.flush()
        for about, made, posted in [
            ("posted long ago", long_ago, long_ago),
            ("posted today", now, now),
            ("waiting", long_ago, None),
        ]:
            session.add(
                WebhookMessage(
                    endpoint_id=row_id(hook),
                    event="enrolled",
                    about=about,
                    created_at=made,
                    next_attempt_at=made,
                    delivered_at=posted,
                )
            )

    def left() -> tuple[list[str], list[str]]:
        with session_scope(engine) as session:
            emails = session.exec(select(Subscriber.email)).all()
            kept = session.exec(select(WebhookMessage.about).order_by(col(WebhookMessage.id))).all()
            return sorted(emails), list(kept)

    processes("worker")
    queue.send_task(PURGE_TASK)
    wait_for(
        lambda: left() == ([reader], ["posted today", "waiting"]),
        30,
        "the stale sign-up and the old post deleted by the worker",
    )


def test_after_the_switch_to_aftercare_the_overdose_and_safety_lessons_still_arrive_once(
    settings, smtp, family_guides, processes
):
    """A family whose loved one enters detox in week 1, when lost tolerance makes an overdose
    most likely, must still get the overdose and safety lessons."""
    settings.default_sequence = family_guides["en"]
    processes("worker", concurrency=2)
    from course.web import create_app

    def positions() -> list[int]:
        # Message-IDs name the lesson's position: <lesson.ENROLLMENT.POSITION.random@domain>
        with smtp.lock:
            ids = [str(m["Message-ID"]) for m in smtp.received if m["To"] == "family@example.org"]
        return [int(i.split(".")[2]) for i in ids if i.startswith("<lesson.")]

    with TestClient(create_app(settings, SystemClock())) as client:
        client.post("/enroll", json={"email": "family@example.org", "sequence": "family-guide"})
        wait_for(lambda: len(smtp.to("family@example.org")) == 1, 20, "the confirmation email")
        assert client.get(confirm_link(smtp.to("family@example.org")[0])).status_code == 200
        wait_for(lambda: positions() == [1], 20, "lesson 1")
        [lesson] = [
            m for m in smtp.to("family@example.org") if "confirm" not in m["Subject"].lower()
        ]
        stage = re.search(
            r"https://homeward\.test(/stage/[\w.\-]+)", lesson.get_body(("plain",)).get_content()
        )
        assert stage, "lesson 1 offers the switch"
        assert "Thank you for telling us" in client.post(stage.group(1)).text
    # The sign-up and the confirmation nudge the ticks that send lesson 1; beat starts once the
    # switch is in. Started earlier, on a slow machine its tick could send lesson 2 (due days of
    # 50 ms later) before the reader's answer landed.
    processes("beat")

    def completed() -> bool:
        with session_scope(engine_for(settings.database_url)) as session:
            return session.exec(select(Enrollment)).one().status == "completed"

    wait_for(completed, 60, "the course to end")
    assert positions() == [1, 5, 9, 14, 15, 16, 17]  # 05 overdose, 09 safety, then aftercare


def test_a_pause_and_a_conversation_date_through_the_broker(settings, smtp, env, processes):
    """A reader pauses after the welcome, sets the day of the conversation while paused, and
    resumes: the real worker sends nothing in the pause, the lessons that prepare come before
    the day, the check-in the day after, then the rest."""
    from course.authoring import load_sequence, publish
    from course.web import create_app
    from tests.support import FIXTURES

    # A day long enough for the date to be set and read on the same course day; the conversation
    # far enough out that a slow machine's beat, which can take a course day or two to send a
    # lesson, still leaves days before it for the lessons that prepare.
    day = 0.25
    settings.day_seconds = day
    env["COURSE_DAY_SECONDS"] = str(day)
    settings.default_sequence = "planning-course"
    with session_scope(engine_for(settings.database_url)) as session:
        publish(session, load_sequence(FIXTURES / "planning-course"), SystemClock())
    processes("worker", concurrency=2)
    processes("beat")
    reader = "planner@example.org"

    def lessons() -> list[str]:
        with smtp.lock:
            subjects = [str(m["Subject"]) for m in smtp.received if m["To"] == reader]
        return [s.removeprefix("Lesson ") for s in subjects if s.startswith("Lesson ")]

    def enrollment() -> Enrollment:
        with session_scope(engine_for(settings.database_url)) as session:
            return session.exec(select(Enrollment)).one()

    with TestClient(create_app(settings, SystemClock())) as client:
        client.post("/enroll", json={"email": reader})
        wait_for(lambda: len(smtp.to(reader)) == 1, 20, "the confirmation email")
        client.get(confirm_link(smtp.to(reader)[0]))
        wait_for(lambda: lessons() == ["welcome"], 20, "the welcome lesson")
        text = smtp.to(reader)[-1].get_body(("plain",)).get_content()
        link = re.search(r"https://homeward\.test(/preferences/[\w.\-]+)", text)
        assert link
        client.post(link.group(1), data={"action": "pause", "how_long": "resumed"})
        wait_for(lambda: any("/resume" in str(m) for m in smtp.to(reader)), 20, "the pause's email")
        confirmed = enrollment().confirmed_at
        assert confirmed is not None
        # A compressed course day N after the confirmation is its date + N (course.plan).
        started = as_utc(confirmed)
        today = int((datetime.now(UTC) - started).total_seconds() // day)
        conversation = started.date() + timedelta(days=today + 12)
        saved = client.post(
            link.group(1), data={"action": "dates", "conversation_on": conversation.isoformat()}
        )
        assert saved.status_code == 200, saved.text
        client.post(link.group(1), data={"action": "resume"})

    wait_for(lambda: enrollment().status == "completed", 60, "the course to end")
    assert lessons() == [
        "welcome",
        "overdose",
        "talking",
        "check-in",
        "signs",
        "recovery",
        "yourself",
    ]


def test_a_new_version_published_while_the_worker_delivers_reaches_every_reader_once(
    settings, smtp, processes, tmp_path
):
    """Staff publish a new version (a lesson rewritten, one added) while a real worker is in the
    middle of sending the course on a fast clock: every reader gets each lesson once, the added
    one too, whatever they had or had in flight at that moment."""
    import shutil

    from course.authoring import load_sequence, publish
    from tests.support import FIXTURES

    course, edits = FIXTURES / "live-course", FIXTURES / "live-course-edits"
    settings.default_sequence = "live-course"
    with session_scope(engine_for(settings.database_url)) as session:
        publish(session, load_sequence(course), SystemClock())
    readers = active_readers(settings, SystemClock(), 20)
    # Version 2: talking rewritten, "late" added before the last lesson.
    folder = tmp_path / "v2" / "live-course"
    shutil.copytree(course, folder)
    shutil.copy(edits / "03-talking.md", folder / "03-talking.md")
    (folder / "05-care.md").rename(folder / "06-care.md")
    shutil.copy(edits / "04-late.md", folder / "05-late.md")
    edited = load_sequence(folder)

    def lessons(reader: str) -> list[str]:
        with smtp.lock:
            subjects = [str(m["Subject"]) for m in smtp.received if m["To"] == reader]
        return [s.removeprefix("Lesson ") for s in subjects if s.startswith("Lesson ")]

    processes("worker", concurrency=2)
    processes("beat")
    wait_for(lambda: all(len(lessons(r)) >= 2 for r in readers), 30, "two lessons each")
    with session_scope(engine_for(settings.database_url)) as session:
        _, created = publish(session, edited, SystemClock())
    assert created
    assert max(len(lessons(r)) for r in readers) < 5, "a reader finished before the new version"

    def completed() -> bool:
        with session_scope(engine_for(settings.database_url)) as session:
            return all(e.status == "completed" for e in session.exec(select(Enrollment)).all())

    wait_for(completed, 60, "every reader to finish the course")
    for reader in readers:
        got = [s.removesuffix(", rewritten").removesuffix(" (added)") for s in lessons(reader)]
        assert got == ["welcome", "signs", "talking", "safety", "late", "care"], (reader, got)


def test_staff_pause_resume_and_resend_through_the_broker(
    settings, smtp, mini_course, env, processes, tmp_path: Path
):
    """A reader calls: staff pause their course (the real worker sends nothing while it is
    paused, through many ticks), resume it (the next lesson comes, then the last, once each) and
    send the first lesson again (it arrives a second time; the course is not moved)."""
    from course.staff import helpdesk
    from course.staff.accounts import CLI

    day = 1.0  # a course day long enough for staff to act between two lessons
    settings.day_seconds = day
    env["COURSE_DAY_SECONDS"] = str(day)
    [reader] = active_readers(settings, SystemClock(), 1)
    processes("worker", concurrency=2)
    processes("beat")
    engine = engine_for(settings.database_url)

    def subjects() -> list[str]:
        return [str(m["Subject"]) for m in smtp.to(reader)]

    def staff(action: str, value: str = "") -> list[int]:
        with session_scope(engine) as session:
            e = session.exec(select(Enrollment)).one()
            return helpdesk.act(
                session,
                settings,
                SystemClock(),
                actor=CLI,
                subscriber_id=e.subscriber_id,
                enrollment_id=e.id or 0,
                action=action,
                value=value,
            )

    def ticks() -> int:
        """Ticks the worker has run: each one would have claimed a lesson that was due."""
        return (tmp_path / "worker-w1.log").read_text(errors="replace").count("homeward.tick[")

    wait_for(lambda: subjects() == ["Welcome"], 20, "lesson 1")
    enqueue_sends([staff("pause", "resumed")])
    wait_for(lambda: len(subjects()) == 2, 20, "the email that confirms the pause")
    assert subjects()[1] == "Your emails are paused"
    # Ticks enough for four course days, long past when lesson 2 was due (two days after 1).
    seen = ticks()
    wait_for(lambda: ticks() >= seen + int(4 * day / 0.5), 30, "four course days of ticks")
    assert subjects() == ["Welcome", "Your emails are paused"]
    staff("resume")
    wait_for(lambda: len(subjects()) == 4, 30, "lessons 2 and 3 after the resume")
    assert subjects()[2:] == ["Lesson two of the mini course", "The last lesson"]
    enqueue_sends([staff("resend", "1")])
    wait_for(lambda: len(subjects()) == 5, 20, "lesson 1 sent again")
    assert subjects()[4] == "Welcome"
    with session_scope(engine) as session:
        assert session.exec(select(Enrollment)).one().status == "completed"


def test_pace_and_discreet_mode_change_the_next_email_through_the_broker(
    settings, smtp, mini_course, env, processes
):
    """A reader slows the course to a lesson a week and asks for discretion after lesson 1:
    the real worker sends lesson 2 a week (of course days) after lesson 1, from a plain sender
    under a plain subject, and the course still ends with every lesson once."""
    from course.readers import preferences

    day = 0.6  # lesson 2 is due 1.2 s after lesson 1: time for the change to land first
    settings.day_seconds = day
    env["COURSE_DAY_SECONDS"] = str(day)
    [reader] = active_readers(settings, SystemClock(), 1)
    processes("worker", concurrency=2)
    processes("beat")
    engine = engine_for(settings.database_url)
    wait_for(lambda: len(smtp.to(reader)) == 1, 20, "lesson 1")

    def lesson_two_planned() -> bool:
        with session_scope(engine) as session:
            e = session.exec(select(Enrollment)).one()
            return e.next_position == 2 and e.next_due_at is not None

    wait_for(lesson_two_planned, 20, "lesson 1 recorded and lesson 2 planned")
    with session_scope(engine) as session:
        e = session.exec(select(Enrollment)).one()
        enrollment_id = e.id or 0
        planned = as_utc(e.next_due_at) if e.next_due_at else None
        preferences.set_pace(session, settings, SystemClock(), enrollment_id=enrollment_id, days=7)
        preferences.set_discreet(
            session, settings, SystemClock(), enrollment_id=enrollment_id, discreet=True
        )
    with session_scope(engine) as session:
        e = session.exec(select(Enrollment)).one()
        due = as_utc(e.next_due_at) if e.next_due_at else None
        sent = session.exec(
            select(Delivery).where(Delivery.position == 1, Delivery.kind == "lesson")
        ).one()
    assert planned and due and due > planned, "the pace moved the next lesson later"
    assert sent.sent_at and (due - as_utc(sent.sent_at)).total_seconds() >= 6 * day, "a week on"
    wait_for(lambda: len(smtp.to(reader)) == 2, 30, "lesson 2 at the new pace")
    second = smtp.to(reader)[1]
    assert second["Subject"] == "A note for you" and str(second["From"]).startswith("Notes <")
    wait_for(lambda: status_of(engine) == "completed", 40, "the course to end at the new pace")
    assert [m["Subject"] for m in smtp.to(reader)].count("A note for you") == 2


def status_of(engine) -> str:
    with session_scope(engine) as session:
        return session.exec(select(Enrollment)).one().status
