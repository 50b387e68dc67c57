"""Staff write a course in the browser: create it, write lessons as form fields, see the
checker's findings beside them and the email for chosen readers, send tests to themselves, have
it reviewed by someone else, publish, offer it, roll back; the same through the staff API; files
stay first-class (export, import, round trip)."""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import col, select

from course.authoring import load_sequence
from course.authoring.check import check
from course.db import engine_for, session_scope
from course.models import Delivery, SequenceVersion
from course.render import Layout
from tests.staff.support import add_staff, api_token, csrf, signed_in
from tests.support import confirm_link, lessons_to

EDITOR, REVIEWER = "ed@centre.org", "rita@centre.org"

GOOD = {
    "subject": "A note for this week",
    "preheader": "One small idea, and one step to try.",
    "heading": "Staying close while you wait",
    "delay_days": "0",
    "module": "recognize",
    "sources": "SAMHSA National Helpline | https://www.samhsa.gov/find-help/national-helpline",
    "body": (
        "{% if first_name %}Hi {{ first_name }},{% else %}Hello,{% endif %}\n\n"
        "You love someone who may be using "
        "{% if substance == 'alcohol' %}alcohol{% else %}drugs{% endif %}. "
        "You do not have to do this alone. Call a friend today.\n"
    ),
}


@pytest.fixture
def app(settings, clock, mini_course, queued) -> Any:
    from course.web import create_app

    add_staff(settings, clock, EDITOR, "editor")
    add_staff(settings, clock, REVIEWER, "reviewer")
    settings.sequences = {"en": "mini-course"}
    return create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)


def browser(app: Any) -> TestClient:
    return TestClient(app, base_url="https://testserver", raise_server_exceptions=False)


def new_course(client: TestClient, slug: str = "partners") -> tuple[str, str]:
    """Create a course; (draft page path, its first lesson's editor path)."""
    made = client.post(
        "/staff/courses/new",
        data={
            "csrf": csrf(client.get("/staff/courses/new").text),
            "title": "For partners",
            "slug": slug,
            "sender_name": "Homeward",
            "locale": "en",
        },
        follow_redirects=False,
    )
    assert made.status_code == 303, made.text
    draft = made.headers["location"].split("?")[0]
    lesson = re.search(rf'href="({draft}/lessons/\d+)"', client.get(draft).text)
    assert lesson
    return draft, lesson.group(1)


def save(client: TestClient, lesson: str, **fields: str) -> Any:
    page = client.get(lesson)
    return client.post(
        lesson,
        data={"csrf": csrf(page.text), "key": "welcome", **GOOD, **fields},
        follow_redirects=True,
    )


def press(client: TestClient, draft: str, action: str, **fields: str) -> Any:
    return client.post(f"{draft}/{action}", data={"csrf": csrf(client.get(draft).text), **fields})


def test_a_lesson_written_in_the_browser_is_checked_beside_its_fields_and_previewed(app, smtp):
    with browser(app) as client:
        signed_in(client, smtp, EDITOR)
        draft, lesson = new_course(client)
        revealing = save(client, lesson, subject="What to do in an overdose")
        assert "To fix:" in revealing.text and "lock screen" in revealing.text, "beside the lesson"
        assert "1 to fix" in client.get(draft).text, "and counted on the course's page"
        fixed = save(client, lesson)
        assert "The checker finds nothing to fix" in fixed.text and "Reading grade" in fixed.text
        html_for = {
            substance: client.get(
                f"{lesson}/preview?relationship=partner&substance={substance}&first_name=Sam"
            ).text
            for substance in ("alcohol", "opioids")
        }
        assert "using alcohol" in html_for["alcohol"] and "using drugs" in html_for["opioids"]
        assert "Hi Sam," in html_for["alcohol"] and "988" in html_for["alcohol"], "the real layout"
        framed = client.get(f"{lesson}/preview")
        assert "default-src 'none'" in framed.headers["content-security-policy"]
        assert 'sandbox src="' in client.get(lesson).text, "shown in a frame that runs nothing"
        live = client.post(
            f"{lesson}/live",
            data={
                "csrf": csrf(client.get(lesson).text),
                **GOOD,
                "body": "Typed just now, unsaved.",
            },
        )
        assert live.status_code == 200 and "Typed just now, unsaved." in live.text


def test_a_template_reaching_for_internals_and_raw_html_are_refused_plainly(app, smtp):
    with browser(app) as client:
        signed_in(client, smtp, EDITOR)
        _, lesson = new_course(client)
        page = save(client, lesson, body="Hello {{ ''.__class__.__mro__ }}\n")
        assert "reaches inside the system" in page.text and "first_name" in page.text
        preview = client.get(f"{lesson}/preview").text
        assert "tries to reach inside the system" in preview and "__mro__" not in preview
        save(client, lesson, body=GOOD["body"] + "\n<script>alert('x')</script> <b>bold</b>\n")
        shown = client.get(f"{lesson}/preview").text
        assert "<script>" not in shown and "&lt;script&gt;" in shown and "<b>" not in shown


def test_a_test_send_reaches_only_the_staff_member_marked_as_a_test_and_counts_nowhere(
    app, smtp, settings
):
    with browser(app) as client:
        signed_in(client, smtp, EDITOR)
        draft, lesson = new_course(client)
        save(client, lesson)
        client.post(f"{draft}/lessons", data={"csrf": csrf(client.get(draft).text)})
        sent = press(client, draft, "test-send", lesson_id="all")
        assert sent.status_code == 200 and "marked as a test" in sent.text
    tests = [m for m in smtp.to(EDITOR) if str(m["Subject"]).startswith("[TEST]")]
    assert [str(m["Subject"]).split(":")[0] for m in tests] == [
        "[TEST] lesson 1 of 2",
        "[TEST] lesson 2 of 2",
    ]
    assert all(m["X-Homeward-Test"] == "1" for m in tests)
    with session_scope(engine_for(settings.database_url)) as session:
        assert session.exec(select(Delivery)).all() == [], "no delivery row, no count"


def test_review_by_someone_else_then_publish_offer_and_a_reader_gets_lesson_one(
    app, smtp, settings, clock, deliver, intake
):
    with browser(app) as editor:
        signed_in(editor, smtp, EDITOR)
        draft, lesson = new_course(editor)
        save(editor, lesson)
        assert "Submitted for review" in press(editor, draft, "submit").text
    with browser(app) as reviewer:
        signed_in(reviewer, smtp, REVIEWER)
        review = reviewer.get(f"{draft}/review")
        assert "welcome: added" in review.text and "+subject: A note for this week" in review.text
        signed = press(reviewer, draft, "sign-off", review_by="2031-01-01")
        assert "Signed off" in signed.text
    with browser(app) as editor:
        signed_in(editor, smtp, EDITOR)
        refused = press(editor, draft, "publish")
        assert refused.status_code == 403 and "Only a reviewer or an admin" in refused.text
    with browser(app) as reviewer:
        signed_in(reviewer, smtp, REVIEWER)
        assert "Published" in press(reviewer, draft, "publish").text
        offer = reviewer.get("/staff/offer")
        reviewer.post(
            "/staff/offer",
            data={"csrf": csrf(offer.text), "offer:mini-course": "1", "offer:partners": "1"},
        )
        home = reviewer.get("/").text
        assert "For partners (English)" in home, "offered beside the course it had"
        own = reviewer.get("/courses/partners")
        assert own.status_code == 200 and "For partners" in own.text
        assert 'name="sequence" value="partners"' in own.text
        reviewer.post(
            "/enroll", data={"email": "reader@example.org", "sequence": "partners", "lang": "en"}
        )
    with session_scope(engine_for(settings.database_url)) as session:
        version = session.exec(
            select(SequenceVersion).where(SequenceVersion.slug == "partners")
        ).one()
        assert version.reviewed_by == REVIEWER and str(version.review_by) == "2031-01-01"
    intake()
    deliver()
    with browser(app) as reader:
        reader.get(confirm_link(smtp.to("reader@example.org")[0]))
    deliver()
    [first] = lessons_to(smtp, "reader@example.org")
    assert first["Subject"] == "A note for this week"


def test_an_author_cannot_sign_off_their_own_draft(app, smtp, settings, clock):
    add_staff(settings, clock, "both@centre.org", "reviewer")
    with browser(app) as client:
        signed_in(client, smtp, "both@centre.org")
        draft, lesson = new_course(client)
        save(client, lesson)
        press(client, draft, "submit")
        own = press(client, draft, "sign-off", review_by="2031-01-01")
        assert own.status_code == 403 and "another reviewer must sign it off" in own.text


def test_an_edit_needs_a_new_review_and_a_rollback_publishes_the_old_text_again(
    app, smtp, settings, clock
):
    with browser(app) as client:
        signed_in(client, smtp, REVIEWER)
        page = client.get("/staff/courses/mini-course")
        opened = client.post(
            "/staff/courses/mini-course/edit",
            data={"csrf": csrf(page.text)},
            follow_redirects=False,
        )
        draft = opened.headers["location"].split("?")[0]
        locked = press(client, draft, "submit")
        assert locked.status_code == 200
        assert press(client, draft, "settings", title="Changed").status_code == 403, (
            "locked in review"
        )
        press(client, draft, "withdraw")
        press(client, draft, "settings", title="A renamed mini course", sender_name="Homeward")
        press(client, draft, "submit")
    add_staff(settings, clock, "sam@centre.org", "reviewer")
    with browser(app) as second:
        signed_in(second, smtp, "sam@centre.org")
        press(second, draft, "sign-off", review_by="2031-01-01")
        press(second, draft, "publish")
    with browser(app) as client:
        signed_in(client, smtp, REVIEWER)
        course = client.get("/staff/courses/mini-course")
        assert "A renamed mini course" in course.text and "2 (current)" in course.text
        version_one = re.search(r'name="version_id" value="(\d+)"', course.text)
        assert version_one, "the older version can be published again"
        client.post(
            "/staff/courses/mini-course/rollback",
            data={"csrf": csrf(course.text), "version_id": version_one.group(1)},
        )
    with session_scope(engine_for(settings.database_url)) as session:
        titles = [
            v.title
            for v in session.exec(
                select(SequenceVersion)
                .where(SequenceVersion.slug == "mini-course")
                .order_by(col(SequenceVersion.version))
            )
        ]
    assert titles == [titles[0], "A renamed mini course", titles[0]]


def test_a_version_exported_as_files_checks_and_imports_again_unchanged(
    app, smtp, settings, tmp_path
):
    with browser(app) as client:
        signed_in(client, smtp, EDITOR)
        archive = client.get("/staff/courses/mini-course/versions/1/export")
        assert archive.headers["content-type"] == "application/zip"
        zipfile.ZipFile(io.BytesIO(archive.content)).extractall(tmp_path)
        exported = tmp_path / "mini-course"
        spec, _ = check(exported, Layout.load(settings.lessons_dir / "_layout"))
        original = load_sequence(settings.lessons_dir.parent / "tests" / "fixtures" / "mini-course")
        assert [(o.key, o.subject, o.body) for o in spec.lessons] == [
            (o.key, o.subject, o.body) for o in original.lessons
        ]
        page = client.get("/staff/import")
        imported = client.post(
            "/staff/import",
            data={"csrf": csrf(page.text)},
            files={"archive": ("mini-course.zip", archive.content, "application/zip")},
            follow_redirects=True,
        )
        assert imported.status_code == 200 and "Draft: " in imported.text, imported.text[-3000:]
        junk = client.post(
            "/staff/import",
            data={"csrf": csrf(page.text)},
            files={"archive": ("x.zip", b"not a zip", "application/zip")},
        )
        assert junk.status_code == 422 and "not a .zip file" in junk.text


def test_the_staff_api_writes_reviews_and_publishes_a_course(app, smtp, settings, clock):
    with browser(app) as client:
        mine, theirs = api_token(settings, clock, EDITOR), api_token(settings, clock, REVIEWER)
        made = client.post(
            "/api/staff/courses",
            json={
                "slug": "siblings",
                "title": "For brothers and sisters",
                "sender_name": "Homeward",
            },
            headers=mine,
        )
        assert made.status_code == 201, made.text
        draft = made.json()
        lesson_id = draft["lessons"][0]["id"]
        fields = {
            **GOOD,
            "key": "welcome",
            "delay_days": 0,
            "sources": [
                {
                    "title": "SAMHSA National Helpline",
                    "url": "https://www.samhsa.gov/find-help/national-helpline",
                }
            ],
        }
        assert (
            client.put(
                f"/api/staff/drafts/{draft['id']}/lessons/{lesson_id}", json=fields, headers=mine
            ).status_code
            == 200
        )
        preview = client.get(
            f"/api/staff/drafts/{draft['id']}/lessons/{lesson_id}/preview?substance=alcohol",
            headers=mine,
        )
        assert "using alcohol" in preview.json()["html"]
        assert client.get(f"/api/staff/drafts/{draft['id']}", headers=mine).json()["check"]["ok"]
        assert (
            client.post(f"/api/staff/drafts/{draft['id']}/submit", headers=mine).json()["state"]
            == "in_review"
        )
        own = client.post(
            f"/api/staff/drafts/{draft['id']}/sign-off",
            json={"review_by": "2031-06-01"},
            headers=mine,
        )
        assert own.status_code == 403
        signed = client.post(
            f"/api/staff/drafts/{draft['id']}/sign-off",
            json={"review_by": "2031-06-01"},
            headers=theirs,
        )
        assert signed.json()["state"] == "signed_off"
        published = client.post(f"/api/staff/drafts/{draft['id']}/publish", headers=theirs)
        assert published.status_code == 200 and published.json()["version"] == 1
        bad = client.put(
            f"/api/staff/drafts/{draft['id']}/lessons/{lesson_id}",
            json={"key": "Not A Key"},
            headers=mine,
        )
        assert bad.status_code in (403, 422) and "error" in bad.json()


def test_what_cannot_be_stored_is_refused_in_words_and_nothing_is_written(app, smtp):
    # A NUL byte (PostgreSQL cannot store one), a day past a year, an id past any column.
    with browser(app) as client:
        draft, lesson = new_course(signed_in(client, smtp, EDITOR))
        for fields, words in (
            ({"body": "Hello\x00there"}, "cannot be stored"),
            ({"subject": "A note\x00"}, "cannot be stored"),
            ({"delay_days": "99999999999"}, "from 0 to 365"),
        ):
            answer = save(client, lesson, **fields)
            assert answer.status_code == 422 and words in answer.text
        assert "Hello\x00there" not in client.get(lesson).text
        assert client.get(f"{draft}/lessons/99999999999999999999").status_code == 422
