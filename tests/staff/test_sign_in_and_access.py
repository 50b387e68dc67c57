"""Staff sign in with an emailed one-time link; nothing on the staff side answers without a
session or a token; roles and CSRF hold; every action is in the audit log."""

from __future__ import annotations

import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from course.db import engine_for, session_scope
from course.models import AuditEntry, SequenceDraft
from course.web.app import ROUTERS
from tests.staff.support import add_staff, api_token, csrf, sign_in_link, signed_in

EDITOR, REVIEWER, ADMIN = "ed@centre.org", "rita@centre.org", "ada@centre.org"


@pytest.fixture
def app(settings, clock, mini_course, queued) -> Any:
    from course.web import create_app

    for email, role in ((EDITOR, "editor"), (REVIEWER, "reviewer"), (ADMIN, "admin")):
        add_staff(settings, clock, email, role)
    return create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)


def browser(app: Any) -> TestClient:
    # https: the session cookie is Secure, as it is on a real server.
    return TestClient(app, base_url="https://testserver", raise_server_exceptions=False)


def test_a_staff_member_signs_in_with_a_link_that_works_once(app, smtp, clock):
    with browser(app) as client:
        signed_in(client, smtp, EDITOR)
        home = client.get("/staff")
        assert home.status_code == 200 and "Courses" in home.text and EDITOR in home.text
        cookie = next(c for c in client.cookies.jar if c.name == "homeward_staff")
        assert cookie.secure and cookie.has_nonstandard_attr("HttpOnly")
        again = client.post(sign_in_link(smtp, EDITOR), follow_redirects=False)
        assert again.status_code == 410 and "This sign-in link has ended" in again.text


def test_opening_the_link_signs_nobody_in_and_a_late_link_has_ended(app, smtp, clock):
    with browser(app) as client:
        client.post("/staff/sign-in", data={"email": EDITOR})
        link = sign_in_link(smtp, EDITOR)
        for _ in range(3):  # a mail scanner opening it, then the person
            assert client.get(link).status_code == 200
        clock.advance(minutes=21)
        assert client.get(link).status_code == 410
        assert client.post(link, follow_redirects=False).status_code == 410
        assert client.get("/staff", follow_redirects=False).status_code == 303


def test_an_unknown_address_gets_the_same_answer_and_no_email(app, smtp):
    with browser(app) as client:
        known = client.post("/staff/sign-in", data={"email": EDITOR})
        unknown = client.post("/staff/sign-in", data={"email": "stranger@example.org"})
    assert known.status_code == unknown.status_code == 200 and known.text == unknown.text
    assert smtp.to("stranger@example.org") == [] and len(smtp.to(EDITOR)) == 1


def test_asking_for_sign_in_links_again_and_again_is_refused(app, smtp):
    with browser(app) as client:
        answers = [
            client.post("/staff/sign-in", data={"email": EDITOR}).status_code for _ in range(6)
        ]
    assert answers == [200] * 5 + [429], (
        "5 an hour for one address (COURSE_STAFF_SIGN_IN_ADDRESS_RATE)"
    )
    assert len(smtp.to(EDITOR)) == 5


def test_signing_out_ends_the_session_for_good(app, smtp):
    with browser(app) as client:
        signed_in(client, smtp, EDITOR)
        cookie = client.cookies.get("homeward_staff")
        out = client.post("/staff/sign-out", data={"csrf": csrf(client.get("/staff").text)})
        assert out.status_code == 200 and "You are signed out" in out.text
    with browser(app) as other:
        other.cookies.set("homeward_staff", str(cookie), domain="testserver")
        assert other.get("/staff", follow_redirects=False).status_code == 303


def test_a_form_without_its_csrf_token_changes_nothing(app, smtp, settings):
    with browser(app) as client:
        signed_in(client, smtp, EDITOR)
        forged = client.post(
            "/staff/courses/new",
            data={"title": "Sneaky", "slug": "sneaky", "sender_name": "Homeward", "locale": "en"},
        )
        assert forged.status_code == 403 and "out of date" in forged.text
    with session_scope(engine_for(settings.database_url)) as session:
        assert session.exec(select(SequenceDraft)).all() == []


# Routes anyone may open: the readers' side, and the staff sign-in pages themselves.
PUBLIC_STAFF = {"/staff/sign-in", "/staff/sign-in/{secret}"}


def _staff_routes() -> list[tuple[str, str]]:
    found = []
    for router in ROUTERS:
        for route in router.routes:
            path = getattr(route, "path", "")
            if path.startswith(("/staff", "/api/staff")) and path not in PUBLIC_STAFF:
                found += [
                    (m, path) for m in sorted(getattr(route, "methods", ()) or ()) if m != "HEAD"
                ]
    return found


def test_every_staff_route_answers_nobody_without_a_session_or_a_token(app):
    routes = _staff_routes()
    assert len(routes) > 40, "the walk found the staff routes"
    with browser(app) as client:
        for method, path in routes:
            url = re.sub(r"\{(\w+)\}", lambda m: "1" if m.group(1).endswith("id") else "x", path)
            answer = client.request(method, url, follow_redirects=False)
            if path.startswith("/api/"):
                assert answer.status_code == 401, (method, path, answer.status_code)
            else:
                assert answer.status_code == 303, (method, path, answer.status_code)
                assert answer.headers["location"].startswith("/staff/sign-in?next=")


def test_the_staff_api_takes_a_token_and_never_a_browsers_cookie(app, smtp, settings, clock):
    with browser(app) as client:
        signed_in(client, smtp, EDITOR)
        assert client.get("/api/staff/courses").status_code == 401, "a cookie is not enough"
        token = api_token(settings, clock, EDITOR)
        listed = client.get("/api/staff/courses", headers=token)
        assert listed.status_code == 200 and [c["slug"] for c in listed.json()] == ["mini-course"]
        assert (
            client.get(
                "/api/staff/courses", headers={"Authorization": "Bearer hw_nope"}
            ).status_code
            == 401
        )


def test_an_editor_cannot_manage_people_and_a_revoked_token_stops_working(
    app, smtp, settings, clock
):
    with browser(app) as client:
        signed_in(client, smtp, EDITOR)
        assert client.get("/staff/people").status_code == 403
        token = api_token(settings, clock, ADMIN)
        assert client.get("/api/staff/audit", headers=token).status_code == 200
    with browser(app) as admin:
        signed_in(admin, smtp, ADMIN)
        people = admin.get("/staff/people")
        number = re.search(r"/staff/tokens/(\d+)/revoke", people.text).group(1)
        admin.post(f"/staff/tokens/{number}/revoke", data={"csrf": csrf(people.text)})
        assert admin.get("/api/staff/audit", headers=token).status_code == 401


def test_every_staff_action_is_in_the_audit_log_with_who_and_when(app, smtp, settings, clock):
    with browser(app) as client:
        signed_in(client, smtp, EDITOR)
        token = csrf(client.get("/staff/courses/new").text)
        client.post(
            "/staff/courses/new",
            data={
                "csrf": token,
                "title": "For partners",
                "slug": "partners",
                "sender_name": "Homeward",
            },
        )
    clock.advance(minutes=5)
    with browser(app) as admin:
        signed_in(admin, smtp, ADMIN)
        page = admin.get("/staff/audit")
        assert page.status_code == 200
        assert (
            "staff:ed@centre.org" in page.text
            and "draft.create" in page.text
            and "partners" in page.text
        )
    with session_scope(engine_for(settings.database_url)) as session:
        actions = [(e.actor, e.action) for e in session.exec(select(AuditEntry)).all()]
    assert ("staff:ed@centre.org", "staff.sign_in") in actions
    assert ("staff:ed@centre.org", "draft.create") in actions
