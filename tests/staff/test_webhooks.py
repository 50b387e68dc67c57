"""Outbound webhooks: an admin connects a real HTTP receiver; readers sign up, confirm, get
their lessons and finish; every event reaches the receiver once, signed per the Standard
Webhooks specification (checked as the specification says), with no address in it. A receiver
that is down gets the posts again later; one that keeps failing is paused, staff see why, and
what it missed goes out once they resume it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from fastapi.testclient import TestClient

from course.db import engine_for
from course.outbound import GIVE_UP_AFTER, RETRY_AFTER, forget_posted, post_due, sweep
from tests.staff.support import add_staff, api_token, csrf, signed_in
from tests.support import run_days, signup, visible

ADMIN, EDITOR, READER = "ada@centre.org", "ed@centre.org", "reader@example.org"


class Receiver:
    """A real HTTP server on this machine that keeps what it is sent, and can be down."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.failing = False
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if outer.failing:
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self, secret: str) -> list[dict[str, Any]]:
        """Every post, its signature checked as the specification says a receiver checks it
        (written out here, not the library the service signs with)."""
        key = base64.b64decode(secret.removeprefix("whsec_"))
        found = []
        for headers, body in self.received:
            signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.{body.decode()}"
            expected = base64.b64encode(hmac.new(key, signed.encode(), hashlib.sha256).digest())
            given = [s.split(",", 1)[1] for s in headers["webhook-signature"].split()]
            assert expected.decode() in given, "signed with the endpoint's secret"
            found.append(json.loads(body))
        return found


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.server.shutdown()


@pytest.fixture
def app(settings, clock, mini_course, queued) -> Any:
    from course.web import create_app

    add_staff(settings, clock, ADMIN, "admin")
    add_staff(settings, clock, EDITOR, "editor")
    return create_app(settings, clock, enqueue=queued.extend, kick=lambda: None)


def connect(app: Any, smtp: Any, url: str, events: list[str]) -> str:
    """Connect an endpoint on the Webhooks page, as an admin; the secret it shows once."""
    client = signed_in(TestClient(app, base_url="https://testserver"), smtp, ADMIN)
    page = client.get("/staff/webhooks")
    done = client.post(
        "/staff/webhooks",
        data={"csrf": csrf(page.text), "url": url, **{f"event:{e}": "1" for e in events}},
    )
    found = re.search(r'<code id="new-secret"[^>]*>(whsec_[^<]+)</code>', done.text)
    assert done.status_code == 200 and found, done.text
    return found.group(1)


def post(settings: Any, clock: Any) -> tuple[int, int]:
    """What the periodic task does: sweep sent lessons in, post what is due."""
    engine = engine_for(settings.database_url)
    sweep(engine, clock)
    return post_due(engine, clock)


def test_every_event_reaches_the_receiver_once_signed_and_without_an_address(
    app, smtp, settings, clock, deliver, receiver
):
    secret = connect(app, smtp, receiver.url, ["enrolled", "confirmed", "lesson.sent", "completed"])
    signup(settings, clock, deliver, smtp, READER)
    run_days(clock, deliver, 7)  # the three lessons; the course completes
    assert post(settings, clock) == (6, 0)
    assert post(settings, clock) == (0, 0), "nothing twice"
    events = receiver.events(secret)
    assert [e["type"] for e in events] == [
        "enrolled",
        "confirmed",
        "lesson.sent",
        "lesson.sent",
        "lesson.sent",
        "completed",
    ]
    assert [e["data"]["lesson"] for e in events if e["type"] == "lesson.sent"] == [1, 2, 3]
    assert all(e["data"]["course"] == "mini-course" for e in events)
    assert READER not in json.dumps([body.decode() for _, body in receiver.received])
    with pytest.raises(AssertionError, match="signed with the endpoint's secret"):
        receiver.events("whsec_" + base64.b64encode(b"another key, not ours").decode())


def test_a_receiver_that_is_down_gets_the_posts_later_and_one_that_keeps_failing_is_paused(
    app, smtp, settings, clock, deliver, receiver
):
    secret = connect(app, smtp, receiver.url, ["enrolled", "confirmed"])
    receiver.failing = True
    signup(settings, clock, deliver, smtp, READER)
    # One failed post a run: the rest of what is due waits for the next run, not a timeout each.
    assert post(settings, clock) == (0, 1)
    clock.advance(seconds=RETRY_AFTER[0].total_seconds())
    receiver.failing = False  # back up
    assert post(settings, clock) == (2, 0)
    assert [e["type"] for e in receiver.events(secret)] == ["enrolled", "confirmed"]

    receiver.failing = True
    for n in range(GIVE_UP_AFTER):  # a run that fails on it, again and again
        signup(settings, clock, deliver, smtp, f"r{n}@example.org")
        assert post(settings, clock) == (0, 1)
    client = signed_in(TestClient(app, base_url="https://testserver"), smtp, ADMIN)
    page = visible(client.get("/staff/webhooks").text)
    assert f"Paused: {GIVE_UP_AFTER} tries in a row failed; the last: HTTP 503" in page
    receiver.failing = False
    clock.advance(hours=20)  # every backoff has run out: only the pause holds them
    assert post(settings, clock) == (0, 0), "a paused endpoint gets nothing"
    client = signed_in(TestClient(app, base_url="https://testserver"), smtp, ADMIN)  # a day on
    listed = client.get("/api/staff/webhooks", headers=api_token(settings, clock, ADMIN)).json()
    missed = 2 * GIVE_UP_AFTER
    assert listed[0]["paused_at"] and listed[0]["waiting"] == missed
    resumed = client.post(
        f"/staff/webhooks/{listed[0]['id']}/resume",
        data={"csrf": csrf(client.get("/staff/webhooks").text)},
    )
    assert resumed.status_code == 200 and "Working" in visible(resumed.text)
    assert post(settings, clock) == (missed, 0)
    assert len(receiver.events(secret)) == 2 + missed


def test_a_paused_endpoint_holds_up_no_other_and_gets_its_backlog_in_order_when_resumed(
    app, smtp, settings, clock, deliver, receiver
):
    crm = Receiver()
    try:
        paused_secret = connect(app, smtp, receiver.url, ["enrolled"])
        crm_secret = connect(app, smtp, crm.url, ["enrolled"])
        client = signed_in(TestClient(app, base_url="https://testserver"), smtp, ADMIN)
        [paused, _] = client.get(
            "/api/staff/webhooks", headers=api_token(settings, clock, ADMIN)
        ).json()
        page = client.get("/staff/webhooks")
        stopped = client.post(
            f"/staff/webhooks/{paused['id']}/pause", data={"csrf": csrf(page.text)}
        )
        assert stopped.status_code == 200
        readers = [f"r{n}@example.org" for n in range(25)]  # more than a run takes of one
        for reader in readers:
            signup(settings, clock, deliver, smtp, reader)
        assert post(settings, clock) == (25, 0), "the working endpoint gets all of its own"
        assert len(crm.events(crm_secret)) == 25 and receiver.received == []
        page = client.get("/staff/webhooks")
        resumed = client.post(
            f"/staff/webhooks/{paused['id']}/resume", data={"csrf": csrf(page.text)}
        )
        assert resumed.status_code == 200
        assert post(settings, clock) == (25, 0)
        enrollments = [e["data"]["enrollment"] for e in receiver.events(paused_secret)]
        assert enrollments == sorted(enrollments) and len(set(enrollments)) == 25, "in order"
    finally:
        crm.server.shutdown()


def test_a_failing_endpoint_holds_up_no_other_in_the_same_run(
    app, smtp, settings, clock, deliver, receiver
):
    """A receiver that answers 503 (not yet paused) costs one try a run; the other endpoint
    gets all of its own in that run, not ten a run behind the failing one's queue."""
    crm = Receiver()
    try:
        connect(app, smtp, receiver.url, ["enrolled"])
        crm_secret = connect(app, smtp, crm.url, ["enrolled"])
        receiver.failing = True
        for n in range(25):
            signup(settings, clock, deliver, smtp, f"r{n}@example.org")
        assert post(settings, clock) == (25, 1)
        assert len(crm.events(crm_secret)) == 25
    finally:
        crm.server.shutdown()


def test_posts_that_went_through_are_deleted_after_the_days_kept_and_waiting_ones_stay(
    app, smtp, settings, clock, deliver, receiver
):
    secret = connect(app, smtp, receiver.url, ["enrolled", "confirmed"])
    engine = engine_for(settings.database_url)
    signup(settings, clock, deliver, smtp, READER)
    assert post(settings, clock) == (2, 0)
    clock.advance(days=settings.webhook_keep_days - 1)
    receiver.failing = True
    signup(settings, clock, deliver, smtp, "later@example.org")
    assert post(settings, clock) == (0, 1), "these two wait"
    assert forget_posted(engine, clock, days=settings.webhook_keep_days) == 0, "not yet"
    clock.advance(days=2)
    assert forget_posted(engine, clock, days=settings.webhook_keep_days) == 2
    client = signed_in(TestClient(app, base_url="https://testserver"), smtp, ADMIN)
    page = visible(client.get("/staff/webhooks").text)
    assert f"kept for {settings.webhook_keep_days} days, then deleted" in page
    assert "2 delivered, 2 waiting" in page, "the count outlives the posts it counted"
    clock.advance(days=settings.webhook_keep_days)  # the waiting two are a month old now
    assert forget_posted(engine, clock, days=settings.webhook_keep_days) == 0, "still to post"
    receiver.failing = False
    assert post(settings, clock) == (2, 0), "what waited goes out, however old"
    assert [e["type"] for e in receiver.events(secret)] == ["enrolled", "confirmed"] * 2
    assert forget_posted(engine, clock, days=settings.webhook_keep_days) == 0, "posted today"


def test_posts_the_next_sweep_looks_back_over_are_kept_after_a_long_outage(
    app, smtp, settings, clock, deliver, receiver
):
    """Down for longer than the days kept: the hourly task runs before the first sweep, whose
    mark is as old as the outage. Lessons sent just before it must keep their posts, or the
    sweep, looking back over them, would queue them again and the receiver get them twice."""
    secret = connect(app, smtp, receiver.url, ["lesson.sent"])
    signup(settings, clock, deliver, smtp, READER)
    deliver()  # lesson 1
    assert post(settings, clock) == (1, 0)
    clock.advance(days=settings.webhook_keep_days + 1)
    forget_posted(engine_for(settings.database_url), clock, days=settings.webhook_keep_days)
    assert post(settings, clock) == (0, 0), "nothing twice"
    assert [e["data"]["lesson"] for e in receiver.events(secret)] == [1]


def test_only_an_admin_connects_systems_and_a_bad_address_is_refused(app, smtp, settings, clock):
    with TestClient(app, base_url="https://testserver") as client:
        editor = api_token(settings, clock, EDITOR)
        admin = api_token(settings, clock, ADMIN)
        hook = {"url": "https://crm.example.org/hooks", "events": ["enrolled"]}
        assert client.post("/api/staff/webhooks", json=hook, headers=editor).status_code == 403
        plain = client.post(
            "/api/staff/webhooks", json={**hook, "url": "http://crm.example.org/"}, headers=admin
        )
        assert plain.status_code == 422 and "https://" in plain.json()["error"]
        unknown = client.post(
            "/api/staff/webhooks", json={**hook, "events": ["opened"]}, headers=admin
        )
        assert unknown.status_code == 422 and "lesson.sent" in unknown.json()["error"]
        made = client.post("/api/staff/webhooks", json=hook, headers=admin)
        assert made.status_code == 201 and made.json()["secret"].startswith("whsec_")
        assert (
            client.delete(f"/api/staff/webhooks/{made.json()['id']}", headers=admin).status_code
            == 204
        )
