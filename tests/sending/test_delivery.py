"""Delivery semantics with an injected clock and a real SMTP server: a whole course in seconds,
exactly once, retries, bounces, lost broker messages and concurrent ticks."""

import re
import shutil
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import SQLModel, func, select

from course.authoring import load_sequence, publish
from course.db import engine_for, session_scope
from course.models import (
    Delivery,
    DeliveryStatus,
    Enrollment,
    SequenceVersion,
    Subscriber,
    row_id,
)
from course.readers.confirm import confirm
from course.readers.personal_data import erase, export
from course.readers.signup import EnrollRequest, enroll
from course.sending import recording, send_batch, tick
from course.sending.mailer import ConnectionProblem, Mailer, SmtpTarget
from tests.support import (
    FIXTURES,
    lessons_to,
    run_days,
    signup,
    truncate,
)


def test_a_whole_course_arrives_in_order_once_each_at_the_local_send_hour(
    settings, clock, smtp, deliver, mini_course
):
    clock.set(datetime(2026, 3, 5, 17, 0, tzinfo=UTC))  # spans the US spring-forward on 8 March
    signup(
        settings,
        clock,
        deliver,
        smtp,
        "ny@example.org",
        time_zone="America/New_York",
        send_hour="9",
    )
    run_days(clock, deliver, 10)
    received = lessons_to(smtp, "ny@example.org")
    assert [m["Subject"] for m in received] == [
        "Welcome",
        "Lesson two of the mini course",
        "The last lesson",
    ]
    local = [m["Date"].datetime.astimezone(ZoneInfo("America/New_York")) for m in received]
    # Lesson 1 straight away; then 2 and 3 days later at 09:00 local, before and after DST.
    assert local[1].date() == local[0].date() + timedelta(days=2) and local[1].hour == 9
    assert local[2].date() == local[1].date() + timedelta(days=3) and local[2].hour == 9
    assert len(set(smtp.message_ids())) == len(smtp.received)
    # Made by the database when the tick claims a lesson: kind, enrollment, position, a nonce.
    for position, message in enumerate(received, start=1):
        assert re.fullmatch(
            rf"<lesson\.\d+\.{position}\.[0-9a-f]{{12}}@homeward\.test>", message["Message-ID"]
        )
    with session_scope(engine_for(settings.database_url)) as session:
        assert session.exec(select(Enrollment)).one().status == "completed"


def _edited_mini_course(tmp_path, lesson_file, subject):
    """The mini course with one lesson's subject changed, as staff would edit and republish it."""
    folder = tmp_path / "mini-course"
    shutil.copytree(FIXTURES / "mini-course", folder)
    path = folder / lesson_file
    text = path.read_text(encoding="utf-8")
    old = re.search(r"^subject: .*$", text, re.MULTILINE).group(0)
    path.write_text(text.replace(old, f"subject: {subject}", 1), encoding="utf-8")
    return load_sequence(folder)


def test_a_new_version_reaches_new_readers_and_those_already_enrolled(
    settings, clock, smtp, deliver, mini_course, tmp_path
):
    signup(settings, clock, deliver, smtp, "before@example.org")
    deliver()  # this process has now sent from the first version
    with session_scope(engine_for(settings.database_url)) as session:
        publish(
            session, _edited_mini_course(tmp_path, "02-middle.md", "Lesson two, rewritten"), clock
        )
    signup(settings, clock, deliver, smtp, "after@example.org")
    run_days(clock, deliver, 3)
    # The reader who started on the first version gets the edited lesson too: live edits reach
    # people already enrolled (tests/sending/test_live_edits.py has the rest of the rule).
    for reader in ("before@example.org", "after@example.org"):
        assert [m["Subject"] for m in lessons_to(smtp, reader)] == [
            "Welcome",
            "Lesson two, rewritten",
        ]


def _recreate(url):
    """Empty every table and start its ids again from 1, as a recreated database would."""
    truncate(url)
    engine = engine_for(url)
    if engine.dialect.name == "postgresql":  # DELETE keeps PostgreSQL's id counters
        with engine.begin() as conn:
            for table in SQLModel.metadata.sorted_tables:
                if "id" not in table.c:
                    continue
                conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), 1, false)"
                )


def _version_ids(url):
    with session_scope(engine_for(url)) as session:
        return session.exec(select(SequenceVersion.id)).all()


def test_a_database_recreated_under_a_running_worker_gets_its_own_lessons(
    settings, clock, smtp, deliver, tmp_path
):
    """Workers read a published version once and keep it. Recreate or restore the database
    under them, and a new version can come back with an id they already know: they must send
    its own text, not the one they remember."""
    _recreate(settings.database_url)
    with session_scope(engine_for(settings.database_url)) as session:
        publish(session, load_sequence(FIXTURES / "mini-course"), clock)
    signup(settings, clock, deliver, smtp, "old@example.org")
    deliver()
    before = _version_ids(settings.database_url)
    _recreate(settings.database_url)
    edited = _edited_mini_course(tmp_path, "01-hello.md", "Welcome to the new course")
    with session_scope(engine_for(settings.database_url)) as session:
        publish(session, edited, clock)
    assert _version_ids(settings.database_url) == before  # the same id, other text
    signup(settings, clock, deliver, smtp, "new@example.org")
    deliver()
    assert [m["Subject"] for m in lessons_to(smtp, "new@example.org")] == [
        "Welcome to the new course"
    ]


def test_every_email_is_multipart_with_unsubscribe_headers_footer_and_sources(
    settings, clock, smtp, deliver, mini_course
):
    signup(settings, clock, deliver, smtp, "h@example.org", first_name="Maria")
    deliver()
    [lesson] = lessons_to(smtp, "h@example.org")
    assert lesson.get_content_type() == "multipart/alternative"
    text = lesson.get_body(("plain",)).get_content()
    html = lesson.get_body(("html",)).get_content()
    unsubscribe = str(lesson["List-Unsubscribe"])
    assert unsubscribe.startswith("<https://homeward.test/unsubscribe/")
    assert "<mailto:unsubscribe@homeward.test?subject=unsubscribe>" in unsubscribe
    raw_header = smtp.raw[-1].split(b"List-Unsubscribe: ", 1)[1].split(b"\r\n", 1)[0]
    assert raw_header.decode() == unsubscribe  # on one line: folding it breaks DKIM somewhere
    assert lesson["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert lesson["Message-ID"].endswith("@homeward.test>")
    assert str(lesson["From"]) == "Homeward Test <lessons@homeward.test>"
    url = unsubscribe[1:].split(">")[0]
    for part in (text, html):
        assert "911" in part and "988" in part and "1-800-662-4357" in part
        assert url in part
        assert "1 Test Street" in part
        assert "SAMHSA National Helpline" in part  # the lesson's source
        assert "Maria" in part
    assert "<style" not in html and 'style="' in html  # CSS inlined for mail clients
    assert "<strong>lesson one</strong>" in html and "lesson one" in text and "**" not in text
    assert "the helpline page (https://www.samhsa.gov/find-help/national-helpline)" in text


def test_a_temporary_refusal_is_retried_later_and_delivered_once(
    settings, clock, smtp, deliver, mini_course
):
    smtp.refuse["t@example.org"] = "451 4.3.0 Try again later"
    with session_scope(engine_for(settings.database_url)) as session:
        enroll(
            session,
            settings,
            clock,
            req=EnrollRequest.parse({"email": "t@example.org"}, "mini-course"),
        )
    clock.advance(seconds=settings.lease_seconds + 1)
    deliver()
    assert smtp.to("t@example.org") == []
    with session_scope(engine_for(settings.database_url)) as session:
        row = session.exec(select(Delivery)).one()
        assert (row.status, row.attempts) == ("pending", 1) and "451" in row.last_error
    deliver()
    assert smtp.to("t@example.org") == []  # backoff: not straight away
    del smtp.refuse["t@example.org"]
    clock.advance(seconds=settings.retry_base_seconds + 1)
    deliver()
    deliver()
    assert len(smtp.to("t@example.org")) == 1


def test_a_permanent_refusal_stops_the_course_and_suppresses_the_address(
    settings, clock, smtp, deliver, mini_course
):
    signup(settings, clock, deliver, smtp, "gone@example.org")
    smtp.refuse["gone@example.org"] = "550 5.1.1 No such user"
    deliver()
    with session_scope(engine_for(settings.database_url)) as session:
        assert session.exec(select(Enrollment)).one().status == "bounced"
        subscriber = session.exec(select(Subscriber)).one()
        assert subscriber.suppressed_at is not None and "550" in subscriber.suppressed_reason
        enroll(
            session,
            settings,
            clock,
            req=EnrollRequest.parse({"email": "gone@example.org"}, "mini-course"),
        )
    del smtp.refuse["gone@example.org"]
    run_days(clock, deliver, 3, step_hours=6)
    assert len(smtp.to("gone@example.org")) == 1  # only the confirmation, before the bounce


def test_the_same_batch_enqueued_twice_is_sent_once(settings, clock, smtp, deliver, mini_course):
    signup(settings, clock, deliver, smtp, "twice@example.org")
    engine = engine_for(settings.database_url)
    [batch] = tick(engine, settings, clock)
    mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
    first = send_batch(engine, settings, clock, mailer=mailer, ids=batch)
    second = send_batch(engine, settings, clock, mailer=mailer, ids=batch)
    mailer.close()
    assert first.sent == batch and second.sent == [] and second.skipped == batch
    assert len(lessons_to(smtp, "twice@example.org")) == 1


def test_a_large_backlog_is_handed_out_claim_by_claim_each_after_its_commit(
    settings, clock, smtp, deliver, mini_course
):
    for n in range(5):
        signup(settings, clock, deliver, smtp, f"backlog{n}@example.org")
    deliver()  # everyone has lesson 1 ...
    clock.advance(days=30)  # ... and, a month later, all five have lesson 2 due
    small = settings.model_copy(update={"claim_batch": 2, "send_batch": 1})
    engine = engine_for(settings.database_url)
    handed: list[list[list[int]]] = []

    def hand_out(batches):
        # A worker may start on these at once: their rows must already be committed.
        with session_scope(engine) as session:
            found = session.exec(
                select(Delivery.id).where(Delivery.id.in_([i for b in batches for i in b]))
            ).all()
        assert len(found) == sum(len(b) for b in batches)
        handed.append(batches)

    returned = tick(engine, small, clock, hand_out=hand_out)
    assert [len(b) for b in handed] == [2, 2, 1]  # three claims of at most two, one per batch
    assert [b for batches in handed for b in batches] == returned
    for batch in returned:
        mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
        send_batch(engine, settings, clock, mailer=mailer, ids=batch)
        mailer.close()
    assert all(len(lessons_to(smtp, f"backlog{n}@example.org")) == 2 for n in range(5))


def test_each_accepted_lesson_is_recorded_before_the_server_can_accept_the_next(
    settings, clock, smtp, deliver, mini_course
):
    """The exactly-once window: a worker killed at any moment leaves at most one message that
    the server accepted and the database does not know was sent."""
    for n in range(6):
        signup(settings, clock, deliver, smtp, f"window{n}@example.org")
    deliver()
    clock.advance(days=30)  # lesson 2 is due for all six
    engine = engine_for(settings.database_url)
    recorded_when_accepting: list[int] = []

    def count_recorded() -> None:
        with session_scope(engine) as session:
            recorded_when_accepting.append(
                session.exec(
                    select(func.count())
                    .select_from(Delivery)
                    .where(Delivery.position == 2, Delivery.status == DeliveryStatus.SENT)
                ).one()
            )

    smtp.on_data = count_recorded
    [batch] = tick(engine, settings, clock)
    mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
    result = send_batch(engine, settings, clock, mailer=mailer, ids=batch)
    mailer.close()
    # As the server takes in lesson k, the k lessons it accepted before are all recorded.
    assert recorded_when_accepting == [0, 1, 2, 3, 4, 5]
    assert len(result.sent) == 6


def test_losing_the_database_mid_batch_resends_only_the_one_unrecorded_lesson(
    settings, clock, smtp, deliver, mini_course
):
    engine = engine_for(settings.database_url)
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite is a file: there is no server connection to lose")
    for n in range(4):
        signup(settings, clock, deliver, smtp, f"dropped{n}@example.org")
    deliver()
    clock.advance(days=30)  # lesson 2 is due for all four
    arrived = 0

    def database_restarts_at_the_second_message() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            with engine.connect() as conn:
                conn.exec_driver_sql(
                    "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend'"
                )

    smtp.on_data = database_restarts_at_the_second_message
    [batch] = tick(engine, settings, clock)
    before = len(smtp.received)
    mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
    with pytest.raises(recording.RecordFailed):
        send_batch(engine, settings, clock, mailer=mailer, ids=batch)
    mailer.close()
    smtp.on_data = None
    # The batch stops where the "sent" write was lost: nothing goes out after that lesson.
    first_try = smtp.received[before:]
    assert len(first_try) == 2
    clock.advance(seconds=settings.lease_seconds + 1)
    deliver()  # the same engine: its pool hands out working connections again
    retry = smtp.received[before + 2 :]
    # Only the one accepted-but-unrecorded lesson goes out twice, with the same Message-ID.
    assert [m["Message-ID"] for m in retry].count(first_try[1]["Message-ID"]) == 1
    assert first_try[0]["Message-ID"] not in [m["Message-ID"] for m in retry]
    lesson_2 = {m["Message-ID"]: m["To"] for m in first_try + retry}
    assert sorted(lesson_2.values()) == [f"dropped{n}@example.org" for n in range(4)]


def test_work_lost_by_the_broker_is_handed_out_again_after_the_lease(
    settings, clock, smtp, deliver, mini_course
):
    signup(settings, clock, deliver, smtp, "lost@example.org")
    engine = engine_for(settings.database_url)
    assert tick(engine, settings, clock)  # enqueued... and the message vanishes
    assert tick(engine, settings, clock) == []  # leased: not handed out twice
    clock.advance(seconds=settings.lease_seconds + 1)
    deliver()
    assert len(lessons_to(smtp, "lost@example.org")) == 1


def test_a_crash_after_the_server_accepted_resends_with_the_same_message_id(
    settings, clock, smtp, deliver, mini_course, monkeypatch
):
    signup(settings, clock, deliver, smtp, "crash@example.org")

    def crash(*args, **kwargs):
        raise SystemExit("worker killed between SMTP 250 and commit")

    monkeypatch.setattr(recording, "sent_writes", crash)
    with pytest.raises(SystemExit):
        deliver()
    monkeypatch.undo()
    clock.advance(seconds=settings.lease_seconds + 1)
    deliver()
    copies = lessons_to(smtp, "crash@example.org")
    assert len(copies) == 2  # the one documented duplicate window
    assert copies[0]["Message-ID"] == copies[1]["Message-ID"]  # receivers can fold them
    run_days(clock, deliver, 10, step_hours=6)
    assert len(lessons_to(smtp, "crash@example.org")) == 2 + 2


def test_smtp_server_down_stops_the_batch_and_delivers_later(
    settings, clock, smtp, deliver, mini_course
):
    for n in range(5):
        with session_scope(engine_for(settings.database_url)) as session:
            enroll(
                session,
                settings,
                clock,
                req=EnrollRequest.parse({"email": f"p{n}@example.org"}, "mini-course"),
            )
    clock.advance(seconds=settings.lease_seconds + 1)
    engine = engine_for(settings.database_url)
    [batch] = tick(engine, settings, clock)
    dead = Mailer(SmtpTarget.from_url("smtp://127.0.0.1:1"))
    result = send_batch(engine, settings, clock, mailer=dead, ids=batch)
    assert result.sent == [] and len(result.retried) == 1 and len(result.released) == 4
    clock.advance(hours=1)
    deliver()
    assert sorted(m["To"] for m in smtp.received) == [f"p{n}@example.org" for n in range(5)]


def test_concurrent_ticks_and_workers_send_nothing_twice(settings, clock, smtp, mini_course):
    engine = engine_for(settings.database_url)
    people = 60
    with session_scope(engine) as session:
        for n in range(people):
            enroll(
                session,
                settings,
                clock,
                req=EnrollRequest.parse({"email": f"c{n}@example.org"}, "mini-course"),
            )
        session.flush()
        for enrollment in session.exec(select(Enrollment)).all():
            confirm(session, settings, clock, enrollment_id=row_id(enrollment))
    settings.send_batch = 7
    errors: list[BaseException] = []

    def beat_and_worker() -> None:
        mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
        try:
            for _ in range(3):
                for batch in tick(engine, settings, clock):
                    send_batch(engine, settings, clock, mailer=mailer, ids=batch)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            mailer.close()

    threads = [threading.Thread(target=beat_and_worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    lessons = [m for m in smtp.received if "confirm" not in m["Subject"].lower()]
    assert sorted(m["To"] for m in lessons) == sorted(f"c{n}@example.org" for n in range(people))


def test_export_and_erase_a_persons_data(settings, clock, smtp, deliver, mini_course):
    signup(settings, clock, deliver, smtp, "me@example.org", first_name="Lee")
    deliver()
    with session_scope(engine_for(settings.database_url)) as session:
        data = export(session, "ME@example.org")
        assert data["first_name"] == "Lee" and data["enrollments"][0]["status"] == "active"
        assert [e["kind"] for e in data["enrollments"][0]["emails"]] == ["confirm", "lesson"]
        assert erase(session, "me@example.org")
    with session_scope(engine_for(settings.database_url)) as session:
        assert export(session, "me@example.org") is None
        assert session.exec(select(Delivery)).all() == []
    clock.advance(days=10)
    deliver()
    assert len(smtp.to("me@example.org")) == 2


def test_if_recording_the_last_message_fails_the_next_one_is_not_handed_over(settings, smtp):
    mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))

    def database_gone() -> None:
        raise RuntimeError("database gone")

    with pytest.raises(RuntimeError, match="database gone"):
        mailer.start(
            b"Subject: first\r\n\r\nbody\r\n",
            "a@homeward.test",
            "c@example.org",
            meanwhile=database_gone,
        )
    mailer.send(b"Subject: second\r\n\r\nbody\r\n", "a@homeward.test", "d@example.org")
    mailer.close()
    assert [m["Subject"] for m in smtp.received] == ["second"]  # the server dropped the first


def test_the_last_record_is_sent_during_the_mail_command_and_both_hooks_run_whatever_happens(
    settings, smtp
):
    events: list[str] = []

    def hooks(tag: str) -> dict[str, Callable[[], None]]:
        return {
            "first": lambda: events.append(f"{tag}: first, {len(smtp.received)} received"),
            "meanwhile": lambda: events.append(f"{tag}: meanwhile"),
        }

    mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
    mailer.start(b"Subject: one\r\n\r\nbody\r\n", "a@homeward.test", "c@example.org", **hooks("up"))
    mailer.finish()
    dead = Mailer(SmtpTarget.from_url("smtp://127.0.0.1:1"))
    with pytest.raises(ConnectionProblem):
        dead.start(
            b"Subject: two\r\n\r\nbody\r\n", "a@homeward.test", "d@example.org", **hooks("down")
        )
    assert events == [
        "up: first, 0 received",
        "up: meanwhile",
        "down: first, 1 received",
        "down: meanwhile",
    ]

    def database_gone() -> None:
        raise RuntimeError("database gone")

    with pytest.raises(RuntimeError, match="database gone"):
        mailer.start(
            b"Subject: three\r\n\r\nbody\r\n",
            "a@homeward.test",
            "e@example.org",
            first=database_gone,
        )
    mailer.send(b"Subject: four\r\n\r\nbody\r\n", "a@homeward.test", "f@example.org")
    mailer.close()
    assert [m["Subject"] for m in smtp.received] == ["one", "four"]


def _refuse_sent_writes(engine, refuse: bool) -> None:
    """Make the database refuse every "sent" write, as a full disk does, or accept them again."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            if refuse:
                conn.exec_driver_sql(
                    "CREATE TRIGGER disk_full BEFORE UPDATE OF status ON delivery"
                    " WHEN NEW.status = 'sent' BEGIN SELECT RAISE(ABORT, 'disk is full'); END"
                )
            else:
                conn.exec_driver_sql("DROP TRIGGER disk_full")
        elif refuse:
            conn.exec_driver_sql(
                "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN RAISE EXCEPTION 'disk is full'; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER disk_full BEFORE UPDATE OF status ON delivery FOR EACH ROW"
                " WHEN (NEW.status = 'sent') EXECUTE FUNCTION disk_full()"
            )
        else:
            conn.exec_driver_sql("DROP TRIGGER disk_full ON delivery")
            conn.exec_driver_sql("DROP FUNCTION disk_full()")


def test_after_a_refused_sent_write_the_workers_next_batches_are_recorded(
    settings, clock, smtp, deliver, mini_course
):
    # A worker's sending threads share one recorder for the life of the process. A disk that
    # filled for a moment once stopped it for good, and every later batch of that worker waited
    # for its "sent" write for ever, holding its lessons.
    engine = engine_for(settings.database_url)
    for n in range(2):
        signup(settings, clock, deliver, smtp, f"full{n}@example.org")
    clock.advance(days=30)  # lesson 2 is due for both
    settings.send_batch = 1
    first, second = tick(engine, settings, clock)
    outcome: list[object] = []
    with recording.GroupRecorder(engine) as recorder:
        _refuse_sent_writes(engine, refuse=True)
        mailer = Mailer(SmtpTarget.from_url(settings.smtp_url))
        with pytest.raises(recording.RecordFailed, match="disk is full"):
            send_batch(engine, settings, clock, mailer=mailer, ids=first, recorder=recorder)
        mailer.close()
        _refuse_sent_writes(engine, refuse=False)

        def next_batch() -> None:
            again = Mailer(SmtpTarget.from_url(settings.smtp_url))
            try:
                result = send_batch(
                    engine, settings, clock, mailer=again, ids=second, recorder=recorder
                )
            finally:
                again.close()
            outcome.append(result.sent)

        sending = threading.Thread(target=next_batch, daemon=True)
        sending.start()
        sending.join(30)
        assert not sending.is_alive(), "the next batch is still waiting for its write"
    assert outcome == [second]
    with session_scope(engine) as session:
        assert session.get(Delivery, second[0]).status == DeliveryStatus.SENT
