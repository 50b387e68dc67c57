"""What many tests share: a real SMTP server that keeps what it accepts, waiting with a deadline,
the links a reader finds in their emails, and small factories for readers.

Fixtures live in conftest.py; these are plain helpers, imported where they are used.
"""

from __future__ import annotations

import html as html_lib
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, event, literal, text, union_all
from sqlmodel import SQLModel, col, select

from course.clock import Clock
from course.db import engine_for, session_scope
from course.models import Enrollment, EnrollmentDue, EnrollmentStatus
from course.readers.confirm import confirm
from course.readers.links import linked_enrollment
from course.readers.signup import EnrollRequest, enroll
from course.settings import Settings
from course.tokens import Purpose, read_token

FIXTURES = Path(__file__).parent / "fixtures"

# --- a real SMTP server ------------------------------------------------------------------------


@dataclass
class SmtpSink:
    """A real SMTP server (aiosmtpd) that keeps what it accepts and can refuse on demand."""

    port: int = 0
    received: list[EmailMessage] = field(default_factory=list)
    raw: list[bytes] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)  # recipient -> "451 ..." / "550 ..."
    lock: threading.Lock = field(default_factory=threading.Lock)
    delay: float = 0.0
    # Called as each message arrives, before the server accepts it (on the server's thread).
    on_data: Callable[[], None] | None = None
    # RFC 2920, as mail providers offer it; off, the client waits for each reply in turn.
    pipelining: bool = True
    # An answer to every message's data instead of accepting it ("421 ..." for a relay in
    # trouble), and how many were answered so.
    data_answer: str | None = None
    refused_data: int = 0
    # When each message was accepted (time.monotonic()), and the most taken in at one moment.
    accepted_at: list[float] = field(default_factory=list)
    in_flight: int = 0
    most_in_flight: int = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if self.pipelining:
            return [*responses[:-1], "250-PIPELINING", responses[-1]]
        return responses

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        answer = self.refuse.get(address)
        if answer:
            return answer
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.data_answer is not None:
            with self.lock:
                self.refused_data += 1
            return self.data_answer
        self.in_flight += 1  # the server's one event loop thread: no lock needed
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                import asyncio

                # A slow server, so a test can kill a worker mid-batch.
                await asyncio.sleep(self.delay)
        finally:
            self.in_flight -= 1
        if self.on_data is not None:
            self.on_data()
        data = envelope.original_content or envelope.content
        msg = message_from_bytes(data, policy=default_policy)
        with self.lock:
            self.received.append(msg)
            self.raw.append(data)
            self.accepted_at.append(time.monotonic())
        return "250 Message accepted"

    def to(self, address: str) -> list[EmailMessage]:
        with self.lock:
            return [m for m in self.received if m["To"] == address]

    def message_ids(self) -> list[str]:
        with self.lock:
            return [str(m["Message-ID"]) for m in self.received]

    def clear(self) -> None:
        with self.lock:
            self.received.clear()


# --- waiting, and an empty database ------------------------------------------------------------


def executed(engine: Any, action: Callable[[], object]) -> list[tuple[str, Any]]:
    """The SQL statements `engine` sends while `action` runs, each with its parameters."""
    seen: list[tuple[str, Any]] = []

    def note(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", note)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", note)
    return seen


def statements_of(engine: Any, action: Callable[[], object]) -> list[str]:
    """The SQL statements `engine` sends while `action` runs."""
    return [statement for statement, _ in executed(engine, action)]


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a PostgreSQL plan (EXPLAIN (FORMAT JSON)), the top one first."""
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until `predicate` holds; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


PG_ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """A new, empty database `name` on the local PostgreSQL server (made afresh if an earlier
    run left one), dropped on the way out: its URL."""
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    try:
        yield url
    finally:
        engine_for(url).dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def due_queue_drift(url: str) -> list[str]:
    """Where the due queue (enrollment_due, kept by triggers) differs from the readers it copies:
    every active enrollment with a due time, at that time, and nothing else. Checked after
    every test that used a database, so each way a test moves a reader checks the triggers."""
    readers = select(literal("reader"), col(Enrollment.id), col(Enrollment.next_due_at)).where(
        col(Enrollment.status) == EnrollmentStatus.ACTIVE,
        col(Enrollment.next_due_at).is_not(None),
    )
    queue = select(literal("queue"), col(EnrollmentDue.enrollment_id), col(EnrollmentDue.due_at))
    with engine_for(url).connect() as conn:
        # One statement, one snapshot: both sides as of the same moment.
        rows: Sequence[Any] = conn.execute(union_all(readers, queue)).all()
    expected = {(i, str(at)) for side, i, at in rows if side == "reader"}
    queued = {(i, str(at)) for side, i, at in rows if side == "queue"}
    return [f"missing from the queue: {row}" for row in sorted(expected - queued)] + [
        f"queued but not due: {row}" for row in sorted(queued - expected)
    ]


def truncate(url: str) -> None:
    """Every table emptied (the schema stays)."""
    with session_scope(engine_for(url)) as session:
        for table in reversed(SQLModel.metadata.sorted_tables):
            session.execute(table.delete())


# --- what a reader finds in an email and on a page ---------------------------------------------


def _text(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "the email has no text part"
    return str(part.get_content())


def _link(message: EmailMessage, path: str) -> str | None:
    found = re.search(rf"https://homeward\.test({path}/[\w.\-]+)", _text(message))
    return found.group(1) if found else None


def confirm_link(message: EmailMessage) -> str:
    link = _link(message, "/confirm")
    assert link, "the email has no confirmation link"
    return link


def data_link(message: EmailMessage) -> str:
    link = _link(message, "/my-data")
    assert link, "the email has no link to the reader's data"
    return link


def stage_token(message: EmailMessage) -> str | None:
    """The token of the "my loved one has started treatment" link, if the email has one."""
    link = _link(message, "/stage")
    return link.rsplit("/", 1)[1] if link else None


def unsubscribe_link(message: EmailMessage) -> str:
    header = str(message["List-Unsubscribe"])
    return header.split("<https://homeward.test", 1)[1].split(">", 1)[0]


def lessons_to(smtp: SmtpSink, email: str) -> list[EmailMessage]:
    return [m for m in smtp.to(email) if "confirm" not in str(m["Subject"]).lower()]


def visible(html: str) -> str:
    """The words a reader sees on a page: tags dropped, entities read, spaces collapsed."""
    text = re.sub(r"<(script|style)\b.*?</\1>", " ", html, flags=re.S | re.I)
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", text)).split())


def selected_course(html: str) -> str:
    """The course preselected on the sign-up form."""
    match = re.search(r'<option value="([\w-]+)" lang="\w+" selected>', html)
    assert match, "no course is selected on the sign-up form"
    return match.group(1)


def linked_id(settings: Settings, purpose: Purpose, token: str, clock: Clock | None = None) -> int:
    """The enrollment id a reader's link leads to, as the web app finds it."""
    link = read_token(settings.secret_key, purpose, token, clock=clock)
    with session_scope(engine_for(settings.database_url)) as session:
        found = linked_enrollment(session, link).id
        assert found is not None
        return found


# --- readers -----------------------------------------------------------------------------------


def enrolled(settings: Settings, clock: Clock, emails: Iterable[str], **fields: Any) -> None:
    """Sign up each address (pending: not confirmed)."""
    with session_scope(engine_for(settings.database_url)) as session:
        for email in emails:
            req = EnrollRequest.parse({"email": email, **fields}, settings.default_sequence)
            enroll(session, settings, clock, req=req)


def active_readers(settings: Settings, clock: Clock, count: int) -> list[str]:
    """`count` confirmed readers whose first lesson is due now."""
    emails = [f"r{n}@example.org" for n in range(count)]
    enrolled(settings, clock, emails)
    with session_scope(engine_for(settings.database_url)) as session:
        for enrollment in session.exec(select(Enrollment)).all():
            assert enrollment.id is not None
            confirm(session, settings, clock, enrollment_id=enrollment.id)
    return emails


def signup(
    settings: Settings,
    clock: Any,
    deliver: Callable[[], list[int]],
    smtp: SmtpSink,
    email: str,
    **fields: Any,
) -> int:
    """Enroll and click the confirmation link, as a reader would; the enrollment's id."""
    enrolled(settings, clock, [email], **fields)
    # Nobody consumed the queue: the tick takes over once the lease has run out.
    clock.advance(seconds=settings.lease_seconds + 1)
    deliver()
    token = confirm_link(smtp.to(email)[-1]).rsplit("/", 1)[1]
    enrollment_id = linked_id(settings, Purpose.CONFIRM, token, clock)
    with session_scope(engine_for(settings.database_url)) as session:
        confirm(session, settings, clock, enrollment_id=enrollment_id)
    return enrollment_id


def run_days(
    clock: Any, deliver: Callable[[], list[int]], days: float, step_hours: float = 1
) -> None:
    """Let `days` pass on the clock, delivering what falls due every `step_hours`."""
    for _ in range(int(days * 24 / step_hours)):
        deliver()
        clock.advance(hours=step_hours)


def enrollments(settings: Settings) -> list[Enrollment]:
    with session_scope(engine_for(settings.database_url)) as session:
        return list(session.exec(select(Enrollment)).all())
