"""Staff help a reader who calls: find them by address and see every lesson and what comes
next, pause, resume, send a lesson again, switch to recovery lessons, stop a course, sign
someone up by hand, export and erase; and see how each course is doing (the dashboard, its
CSV exports, `course stats`). Through the pages and the API; every action audited."""

from __future__ import annotations

import csv
import io
import re
import tracemalloc
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert
from sqlmodel import col, select

from course.cli import main
from course.db import engine_for, session_scope
from course.models import (
    AuditEntry,
    Delivery,
    Enrollment,
    SequenceVersion,
    Subscriber,
    row_id,
)
from course.staff import export
from tests.staff.support import add_staff, api_token, csrf, signed_in
from tests.support import lessons_to, run_days, signup, visible

EDITOR, ADMIN, READER = "ed@centre.org", "ada@centre.org", "caller@example.org"


@pytest.fixture
def app(settings, clock, mini_course, queued) -> Any:
    from course.web import create_app

    add_staff(settings, clock, EDITOR, "editor")
    add_staff(settings, clock, ADMIN, "admin")
    settings.sequences = {"en": "mini-course"}
    return create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)


def staff(app: Any, smtp: Any, email: str = EDITOR) -> TestClient:
    client = TestClient(app, base_url="https://testserver", raise_server_exceptions=False)
    return signed_in(client, smtp, email)


def open_reader(client: TestClient, email: str = READER) -> Any:
    page = client.get("/staff/readers")
    found = client.post(
        "/staff/readers/find",
        data={"csrf": csrf(page.text), "email": email},
        follow_redirects=False,
    )
    assert found.status_code == 303, found.text
    # The address is posted, never put in an address bar (logs, history).
    assert email not in found.headers["location"]
    return client.get(found.headers["location"])


def press(client: TestClient, page: Any, action: str, value: str = "") -> Any:
    form = re.search(r'action="(/staff/readers/\d+/courses/\d+)"', page.text)
    assert form, "the reader's course has its actions"
    return client.post(
        form.group(1),
        data={"csrf": csrf(page.text), "action": action, "value": value},
        follow_redirects=True,
    )


def audited(settings: Any) -> list[str]:
    with session_scope(engine_for(settings.database_url)) as session:
        return [a.action for a in session.exec(select(AuditEntry)).all()]


def test_a_reader_is_found_by_address_with_every_lesson_and_what_comes_next(
    app, smtp, settings, clock, deliver
):
    signup(settings, clock, deliver, smtp, READER, first_name="Rosa")
    deliver()  # lesson 1
    with staff(app, smtp) as client:
        page = open_reader(client)
        text = visible(page.text)
        assert page.status_code == 200 and "caller@example.org" in text
        assert "caller@example.org" not in re.search(r"<title>(.*?)</title>", page.text).group(1)
        assert "Lesson 1: Welcome, Rosa" in text and "sent" in text
        assert "Lesson 2, “Lesson two of the mini course”, due" in text
        assert "Confirmed" in text and "not yet" not in text
        unknown = client.post(
            "/staff/readers/find",
            data={"csrf": csrf(page.text), "email": "nobody@example.org"},
        )
        assert unknown.status_code == 404 and "Nobody with that address" in unknown.text
    assert audited(settings).count("staff.sign_in") == 1


def test_paused_by_staff_gets_nothing_then_resumes_from_the_next_lesson_and_a_lesson_resent(
    app, smtp, settings, clock, deliver, queued
):
    signup(settings, clock, deliver, smtp, READER)
    deliver()
    assert [m["Subject"] for m in lessons_to(smtp, READER)] == ["Welcome"]
    with staff(app, smtp) as client:
        page = open_reader(client)
        paused = press(client, page, "pause", "resumed")
        assert "Paused" in visible(paused.text) and "until they come back" in visible(paused.text)
    run_days(clock, deliver, 10)
    subjects = [m["Subject"] for m in lessons_to(smtp, READER)]
    assert subjects == ["Welcome", "Your emails are paused"], "a paused reader gets no lesson"
    with staff(app, smtp) as client:  # ten days on: a new session
        resumed = press(client, open_reader(client), "resume")
        assert "Resumed" in visible(resumed.text)
    run_days(clock, deliver, 1)
    assert [m["Subject"] for m in lessons_to(smtp, READER)][-1] == "Lesson two of the mini course"
    with staff(app, smtp) as client:
        again = press(client, open_reader(client), "resend", "1")
        assert "on its way again" in visible(again.text)
        deliver()
        welcomes = [m for m in lessons_to(smtp, READER) if m["Subject"] == "Welcome"]
        assert len(welcomes) == 2 and welcomes[0]["Message-ID"] != welcomes[1]["Message-ID"]
        assert "Lesson 1, sent again: Welcome" in visible(client.get(again.url).text)
        refused = press(client, client.get(again.url), "resend", "9")
        assert refused.status_code == 422 and "already had" in refused.text
    run_days(clock, deliver, 4)
    subjects = [m["Subject"] for m in lessons_to(smtp, READER)]
    # The course went on as it was: nothing else twice, nothing skipped.
    assert subjects.count("Lesson two of the mini course") == 1
    assert subjects.count("The last lesson") == 1
    assert {"reader.pause", "reader.resume", "reader.resend"} <= set(audited(settings))


def test_stopping_one_course_cancels_what_it_has_queued(app, smtp, settings, clock, deliver):
    signup(settings, clock, deliver, smtp, READER)
    deliver()
    with staff(app, smtp) as client:
        stopped = press(client, open_reader(client), "stop")
        assert "Stopped" in visible(stopped.text) and "unsubscribed" in stopped.text
    run_days(clock, deliver, 8)
    assert [m["Subject"] for m in lessons_to(smtp, READER)] == ["Welcome"]


def test_signing_someone_up_by_hand_needs_a_note_and_they_still_confirm(
    app, smtp, settings, clock, deliver
):
    with staff(app, smtp) as client:
        form = client.get("/staff/enroll")
        fields = {"csrf": csrf(form.text), "email": "desk@example.org", "sequence": "mini-course"}
        missing = client.post("/staff/enroll", data=fields)
        assert missing.status_code == 422 and "Say how they agreed" in missing.text
        assert 'aria-invalid="true"' in missing.text
        done = client.post(
            "/staff/enroll", data={**fields, "consent_note": "Asked at the front desk"}
        )
        assert done.status_code == 200 and "they get an email asking them to confirm" in done.text
        again = client.post(
            "/staff/enroll", data={**fields, "consent_note": "Asked at the front desk"}
        )
        assert "sent a confirmation email a few minutes ago" in again.text
    deliver()
    [ask] = smtp.to("desk@example.org")
    assert "confirm" in ask.get_body(preferencelist=("plain",)).get_content().lower()
    assert lessons_to(smtp, "desk@example.org") == [], "no lesson before they confirm"
    with session_scope(engine_for(settings.database_url)) as session:
        enrollment = session.exec(select(Enrollment)).one()
        assert enrollment.status == "pending"
        assert enrollment.consent_note == "Asked at the front desk"
        assert enrollment.consent_source.startswith("staff:")
    assert "reader.enroll" in audited(settings)


def test_only_an_admin_erases_and_then_nothing_of_the_reader_is_left(
    app, smtp, settings, clock, deliver
):
    signup(settings, clock, deliver, smtp, READER, first_name="Rosa")
    with staff(app, smtp) as editor:
        page = open_reader(editor)
        subscriber_path = page.url.path
        assert "Erase for good" not in page.text
        refused = editor.post(
            f"{subscriber_path}/erase", data={"csrf": csrf(page.text), "confirm": "erase"}
        )
        assert refused.status_code == 403
        exported = editor.get(f"{subscriber_path}/export")
        assert exported.json()["email"] == READER and exported.json()["first_name"] == "Rosa"
    with staff(app, smtp, ADMIN) as admin:
        page = admin.get(subscriber_path)
        unconfirmed = admin.post(
            f"{subscriber_path}/erase", data={"csrf": csrf(page.text), "confirm": ""}
        )
        assert unconfirmed.status_code == 422 and "Type the word" in unconfirmed.text
        erased = admin.post(
            f"{subscriber_path}/erase", data={"csrf": csrf(page.text), "confirm": "erase"}
        )
        assert erased.status_code == 200 and "Erased for good" in erased.text
        assert admin.get(subscriber_path).status_code == 404
    with session_scope(engine_for(settings.database_url)) as session:
        assert session.exec(select(Subscriber)).all() == []
        assert session.exec(select(Delivery)).all() == []
    assert {"reader.export", "reader.erase"} <= set(audited(settings))


def test_the_dashboard_counts_readers_lesson_by_lesson(app, smtp, settings, clock, deliver):
    for n in range(3):
        signup(settings, clock, deliver, smtp, f"r{n}@example.org")
    run_days(clock, deliver, 2.5)  # everyone has had lessons 1 and 2
    with session_scope(engine_for(settings.database_url)) as session:
        leaver = session.exec(select(Enrollment).order_by(col(Enrollment.id))).first()
        leaver.status, leaver.ended_at = "unsubscribed", clock.now()
        session.add(leaver)
    with staff(app, smtp) as client:
        page = client.get("/staff/courses/mini-course/dashboard")
        text = visible(page.text)
        assert page.status_code == 200 and "How “Mini course” is doing" in text
        assert page.text.count("<svg") == 2 and 'role="img"' in page.text
        # Each chart's numbers are in a table too.
        assert re.search(r"<td>1\. hello</td><td>3</td><td>0</td>", page.text), page.text
        assert re.search(r"<td>2\. middle</td><td>3</td><td>1</td>", page.text), page.text
        assert client.get("/staff/courses/no-such-course/dashboard").status_code == 404
        figures = client.get(
            "/api/staff/courses/mini-course/dashboard",
            headers=api_token(settings, clock, EDITOR),
        ).json()
    assert figures["by_status"] == {"active": 2, "unsubscribed": 1}
    assert [line["reached"] for line in figures["lessons"]] == [3, 3, 0]
    assert sum(n for _, n in figures["signups"]) == 3 and figures["confirmed"] == 3
    assert figures["lag_sample"] == 6 and figures["failed_waiting"] == 0


def test_the_api_finds_a_reader_acts_and_exports_a_course(app, smtp, settings, clock, deliver):
    signup(settings, clock, deliver, smtp, READER)
    deliver()
    with TestClient(app, base_url="https://testserver") as client:
        mine, admins = api_token(settings, clock, EDITOR), api_token(settings, clock, ADMIN)
        found = client.post("/api/staff/find-reader", json={"email": READER}, headers=mine)
        assert found.status_code == 200, found.text
        reader = found.json()
        [course] = reader["courses"]
        assert course["emails"][-1]["subject"] == "Welcome" and course["next_lesson"] == 2
        paused = client.post(
            f"/api/staff/readers/{reader['id']}/courses/{course['enrollment']}",
            json={"action": "pause", "value": "week"},
            headers=mine,
        )
        assert paused.json()["courses"][0]["paused_until"] is not None
        wrong = client.post(
            f"/api/staff/readers/{reader['id']}/courses/{course['enrollment']}",
            json={"action": "erase"},
            headers=mine,
        )
        assert wrong.status_code == 422
        assert (
            client.get(
                "/api/staff/courses/mini-course/export/enrollments.csv", headers=mine
            ).status_code
            == 403
        )
        table = client.get("/api/staff/courses/mini-course/export/enrollments.csv", headers=admins)
        assert table.status_code == 200 and table.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(table.text)))
        assert [(r["email"], r["status"], r["next_lesson"]) for r in rows] == [
            (READER, "active", "2")
        ]
        assert client.delete(f"/api/staff/readers/{reader['id']}", headers=mine).status_code == 403
        assert (
            client.delete(f"/api/staff/readers/{reader['id']}", headers=admins).status_code == 204
        )
        assert (
            client.post("/api/staff/find-reader", json={"email": READER}, headers=mine).status_code
            == 404
        )


def _many_deliveries(settings: Any, clock: Any, count: int) -> None:
    """`count` sent lessons of one reader's course, written in one statement per 10,000."""
    signup_at = clock.now()
    with session_scope(engine_for(settings.database_url)) as session:
        version = session.exec(select(SequenceVersion)).one()
        subscriber = Subscriber(email="big@example.org", created_at=signup_at)
        session.add(subscriber)
        session.flush()
        enrollment = Enrollment(
            subscriber_id=row_id(subscriber),
            sequence_slug="mini-course",
            version_id=row_id(version),
            status="active",
            created_at=signup_at,
        )
        session.add(enrollment)
        session.flush()
        for start in range(0, count, 10_000):
            session.execute(
                insert(Delivery),
                [
                    {
                        "enrollment_id": enrollment.id,
                        "kind": "lesson",
                        "version_id": version.id,
                        "position": 1000 + n,
                        "message_id": f"<bulk.{n}@test>",
                        "status": "sent",
                        "attempts": 1,
                        "created_at": signup_at,
                        "sent_at": signup_at + timedelta(seconds=2),
                    }
                    for n in range(start, min(start + 10_000, count))
                ],
            )


def _peak_while_streaming(engine: Any, count: int) -> tuple[int, int]:
    tracemalloc.start()
    rows = 0
    try:
        for chunk in export.csv_chunks(export.rows(engine, "deliveries", "mini-course")):
            rows += chunk.count("\n")
            if rows > count + 1:
                break
        return rows, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_course_export_of_100k_rows_streams_at_flat_memory(settings, clock, mini_course):
    _many_deliveries(settings, clock, 100_000)
    engine = engine_for(settings.database_url)
    assert export.count(engine, "deliveries", "mini-course") == 100_000
    rows, peak = _peak_while_streaming(engine, 100_000)
    assert rows == 100_001  # the header and every row
    # Held in memory at once: a chunk of rows, not the export (100k rows are ~8 MB of CSV).
    assert peak < 3_000_000, f"peak {peak / 1e6:.1f} MB"


def test_course_stats_and_course_export_on_the_command_line(
    settings, clock, smtp, deliver, tmp_path, capsys, monkeypatch
):
    from course.authoring import load_sequence, publish
    from tests.support import FIXTURES

    with session_scope(engine_for(settings.database_url)) as session:
        publish(session, load_sequence(FIXTURES / "mini-course"), clock)
    signup(settings, clock, deliver, smtp, READER)
    deliver()
    monkeypatch.setattr("course.cli._settings", lambda: settings)
    assert main(["stats", "--course", "mini-course"]) == 0
    out = capsys.readouterr().out
    assert "mini-course (version 1): 1 signed up, 100% confirmed" in out
    assert re.search(r"1\. hello\s+1\s+0", out), out
    target = tmp_path / "readers.csv"
    assert main(["export", "enrollments", "mini-course", "--out", str(target)]) == 0
    assert "1 rows written to" in capsys.readouterr().err
    rows = list(csv.DictReader(target.open(encoding="utf-8")))
    assert rows[0]["email"] == READER and rows[0]["consent_from"] == "api"
    assert main(["export", "enrollments", "nope"]) == 1
    assert "no published course is called nope" in capsys.readouterr().err
