"""Database tables: subscribers, published lesson sequences, enrollments and deliveries."""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    ColumnElement,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    UniqueConstraint,
    false,
    text,
)
from sqlmodel import Field, SQLModel, col


def _only_where(condition: str, *, sqlite: str | None = None) -> dict[str, Any]:
    """A partial index's condition, on both databases (`sqlite`: as SQLite must read it, which
    uses such an index only when the query's WHERE repeats the condition word for word).

    A row whose indexed column changes gets a new entry in each of its table's indexes (no HOT
    update). An index that holds only the rows that need it skips that entry for the rest.
    """
    return {"postgresql_where": text(condition), "sqlite_where": text(sqlite or condition)}


# SQLite hands a deleted row's id to the next row unless the table says AUTOINCREMENT; a link or
# a cached row naming the old id would then reach someone else.
NO_REUSE = {"sqlite_autoincrement": True}
LINK_KEY_LENGTH = 22


class _Row(Protocol):
    id: int | None


def row_id(row: _Row) -> int:
    """The id of a row that is in the database (flushed or loaded): never None there."""
    if row.id is None:
        raise ValueError(f"{type(row).__name__} has no id until it is flushed")
    return row.id


def new_link_key() -> str:
    """The unguessable name a reader's links use for their enrollment (128 random bits)."""
    return secrets.token_urlsafe(16)


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(
        default=None, sa_column=Column(DateTime(timezone=True), nullable=nullable, index=index)
    )


def _flag() -> Any:
    return Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))


# A pause "until I come back": far enough that the tick never finds the lesson due.
PAUSED_UNTIL_RESUMED = datetime(9999, 1, 1, tzinfo=UTC)


class EnrollmentStatus(StrEnum):
    PENDING = "pending"  # waiting for the double opt-in
    ACTIVE = "active"
    COMPLETED = "completed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"


class DeliveryKind(StrEnum):
    CONFIRM = "confirm"
    LESSON = "lesson"
    DATA = "data"  # a link to the reader's own data, sent when they ask for it
    PAUSED = "paused"  # the one email that confirms a pause, with a link to resume
    RESEND = "resend"  # a lesson the reader had, sent again because they asked staff for it


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"  # gave up after repeated temporary errors
    BOUNCED = "bounced"  # the server refused the address for good
    CANCELLED = "cancelled"  # unsubscribed or erased before it went out


class Subscriber(SQLModel, table=True):
    __table_args__ = (NO_REUSE,)

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True)
    first_name: str = Field(default="", max_length=40)
    time_zone: str = Field(default="UTC", max_length=64)
    send_hour: int = 9
    relationship: str = Field(default="other", max_length=16)
    substance: str = Field(default="unsure", max_length=16)
    created_at: datetime = _ts(nullable=False)
    suppressed_at: datetime | None = _ts()
    suppressed_reason: str | None = Field(default=None, max_length=500)
    # Neutral sender name and subjects, no preheader: others see this person's inbox.
    discreet: bool = _flag()
    # Temporary refusals reported by the provider; past a limit the address is suppressed.
    soft_bounces: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )


class SequenceVersion(SQLModel, table=True):
    __tablename__ = "sequence_version"
    __table_args__ = (UniqueConstraint("slug", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=64, index=True)
    version: int
    title: str = Field(max_length=200)
    description: str = ""
    locale: str = Field(default="en", max_length=8)
    sender_name: str = Field(max_length=80)
    content_hash: str = Field(max_length=64)
    published_at: datetime = _ts(nullable=False)
    # The clinical sign-off this version was published with (empty for files published from
    # the command line): who, when, and by when it must be read again.
    reviewed_by: str = Field(default="", max_length=254)
    reviewed_at: datetime | None = _ts()
    review_by: date | None = Field(default=None, sa_column=Column(Date, nullable=True))


class Lesson(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("version_id", "position"),)

    id: int | None = Field(default=None, primary_key=True)
    version_id: int = Field(foreign_key="sequence_version.id")
    position: int
    key: str = Field(max_length=64)
    subject: str = Field(max_length=200)
    preheader: str = Field(default="", max_length=300)
    delay_days: int = 0
    module: str = Field(default="", max_length=32)
    # Sent to every reader, whatever they switch to later: overdose and safety lessons.
    never_skip: bool = Field(
        default=False, sa_column=Column(Boolean, nullable=False, server_default=false())
    )
    # The heading inside the email; empty means the subject. It may say more than the subject.
    heading: str = Field(default="", max_length=120)
    # How a date the reader sets moves this lesson (course.plan): "", "before:conversation" (it
    # prepares for the conversation), "after:conversation" (a check-in the day after).
    anchor: str = Field(default="", max_length=32)
    body: str
    sources: list[dict[str, str]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )


class Enrollment(SQLModel, table=True):
    __table_args__ = (
        UniqueConstraint("subscriber_id", "sequence_slug"),
        # No index holds next_due_at: what is due is found in EnrollmentDue, kept by the
        # database. Claiming or sending a lesson then rewrites no index entry of this table
        # (a HOT update, with the room fillfactor 85 leaves on each page: migration 0014).
        UniqueConstraint("link_key", name="uq_enrollment_link_key"),
        # The course dashboard (course.stats) finds a course's readers, and its sign-ups by day,
        # here: one index for both, since every other one costs the tick's claim a write per row.
        Index("ix_enrollment_course_signups", "sequence_slug", "created_at"),
        # Courses that ended since the last webhook sweep (course.outbound); only ended ones.
        Index("ix_enrollment_ended", "ended_at", **_only_where("ended_at IS NOT NULL")),
        # Readers waiting to be planned again (course.readers.preferences.replan_waiting), which
        # every tick looks for among the lessons in flight: those are not in the due queue
        # (EnrollmentDue), so without this index each tick would read the whole table.
        Index("ix_enrollment_replan", "id", **_only_where("replan", sqlite="replan = 1")),
        NO_REUSE,
    )

    id: int | None = Field(default=None, primary_key=True)
    # What the reader's links name (never the id): a link whose enrollment is gone finds
    # nothing, whatever ids the database hands out later.
    link_key: str = Field(default_factory=new_link_key, max_length=32)
    # Looked up through the unique constraint above, whose first column it is.
    subscriber_id: int = Field(foreign_key="subscriber.id")
    sequence_slug: str = Field(max_length=64)
    version_id: int = Field(foreign_key="sequence_version.id")
    status: str = Field(default=EnrollmentStatus.PENDING, max_length=16)
    # The lesson to send next; when it is in flight next_due_at is NULL until it has been sent.
    next_position: int = 1
    next_due_at: datetime | None = _ts()
    created_at: datetime = _ts(nullable=False)
    confirmed_at: datetime | None = _ts()
    ended_at: datetime | None = _ts()
    # Set by the reader's "my loved one has started treatment" link: from then on only the
    # aftercare module is sent.
    started_treatment_at: datetime | None = _ts()
    # The reader's own timing (course.plan): a pace in days, a pause, dates that matter.
    pace_days: int | None = None
    paused_until: datetime | None = _ts()
    conversation_on: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    treatment_on: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    # The order of the lessons has changed for this reader (a conversation date): planning
    # then reads which lessons went out instead of counting up to the last one.
    reordered: bool = _flag()
    # A preference changed while a lesson was in flight: once it is sent, the next tick plans
    # the next lesson afresh (the worker's plan was made before the change).
    replan: bool = _flag()
    # Consent: when and where the reader agreed, to which wording (confirmed_at: when they
    # confirmed it).
    consent_at: datetime | None = _ts()
    consent_source: str = Field(default="", max_length=16)
    consent_wording: str = Field(default="", max_length=32)
    # A staff member who enrolled the reader by hand says how they agreed ("asked at the front
    # desk"); the staff member is consent_source ("staff:<id>").
    consent_note: str = Field(default="", max_length=500)
    # The last lesson the reader had had when treatment started: the dashboard's "by lesson".
    treatment_after: int | None = None


class EnrollmentDue(SQLModel, table=True):
    """The enrollments whose next lesson has a due time: a copy of each active enrollment's
    next_due_at, written by the database itself (triggers on enrollment, migration 0014), so
    every writer keeps it right, the claim included. The tick's claim finds the due here.

    With the due time indexed on enrollment itself, each claimed and each sent lesson wrote a
    new entry into every index of that wide table (16 ms of a 40 ms claim of 1,000 at a
    million readers). SQLite drops a table's triggers with it: a migration that rebuilds
    enrollment there (batch_alter_table) must make them again.
    """

    __tablename__ = "enrollment_due"
    __table_args__ = (Index("ix_enrollment_due_at", "due_at"),)

    enrollment_id: int = Field(
        sa_column=Column(Integer, ForeignKey("enrollment.id", ondelete="CASCADE"), primary_key=True)
    )
    due_at: datetime = _ts(nullable=False)


class Delivery(SQLModel, table=True):
    """One email that must go out exactly once. The row exists before anything is enqueued."""

    __table_args__ = (
        # The version is part of it: a reader moved to a new version gets its position 5 even
        # after the old version's position 5 went out.
        UniqueConstraint(
            "enrollment_id", "kind", "version_id", "position", name="uq_delivery_per_version"
        ),
        Index("ix_delivery_pending", "status", "lease_until"),
        # Sent lessons become webhook messages by when they were sent (course.outbound.sweep).
        Index("ix_delivery_sent_at", "sent_at", **_only_where("sent_at IS NOT NULL")),
        NO_REUSE,
    )

    id: int | None = Field(default=None, primary_key=True)
    # Looked up through the unique constraint above, whose first column it is.
    enrollment_id: int = Field(foreign_key="enrollment.id")
    kind: str = Field(max_length=16)
    # The version whose lesson (or wording, for other emails) this is: what the row was claimed
    # for is what is sent, even if the reader moves to a newer version meanwhile.
    version_id: int = Field(foreign_key="sequence_version.id")
    # Lesson position for lessons; the n-th confirmation request for confirmations.
    position: int
    message_id: str = Field(max_length=200, unique=True)
    status: str = Field(default=DeliveryStatus.PENDING, max_length=16)
    attempts: int = 0
    # Tries that failed to render the email (course.sending.batch), counted apart from the
    # relay's answers: they give up sooner, and must not use up the relay's tries.
    render_failures: int = Field(
        default=0, sa_column=Column(Integer, nullable=False, server_default="0")
    )
    # A pending row whose lease has run out is handed to a worker again by the next tick.
    lease_until: datetime | None = _ts()
    lease_owner: str | None = Field(default=None, max_length=64)
    created_at: datetime = _ts(nullable=False)
    sent_at: datetime | None = _ts()
    last_error: str | None = Field(default=None, max_length=500)


def pending_named() -> ColumnElement[bool]:
    """ "Still pending", for a statement that names its emails (by id, or by reader). Compared
    through an expression on purpose, so that no index can serve it and the named rows are
    found by their own index: after a quiet spell the statistics say nothing is pending, and
    PostgreSQL then walked every pending row of a backlog through ix_delivery_pending (a
    batch claimed, a lease renewed, a reader unsubscribed: 0.1-0.5 s each at 200,000
    pending)."""
    return col(Delivery.status).concat("") == DeliveryStatus.PENDING


class SignupRequest(SQLModel, table=True):
    """A sign-up as the form or API sent it, waiting to be taken in (course.readers.intake).

    Writing this row is all a request does, whatever the address: the answer then takes the
    same time for a new, a pending and an enrolled address. It is deleted once taken in.
    """

    __tablename__ = "signup_request"
    __table_args__ = (NO_REUSE,)

    id: int | None = Field(default=None, primary_key=True)
    created_at: datetime = _ts(nullable=False)
    email: str = Field(max_length=254, index=True)  # found and removed by an erase, too
    fields: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class LessonFeedback(SQLModel, table=True):
    """ "Was this helpful?" answers, counted per lesson: nothing ties them to a reader."""

    __tablename__ = "lesson_feedback"
    __table_args__ = (PrimaryKeyConstraint("version_id", "position"),)

    version_id: int = Field(foreign_key="sequence_version.id")
    position: int
    helpful: int = 0
    not_helpful: int = 0


# --- staff ------------------------------------------------------------------------------------


class StaffRole(StrEnum):
    EDITOR = "editor"  # writes drafts
    REVIEWER = "reviewer"  # signs drafts off (never their own) and publishes
    ADMIN = "admin"  # all of that, and manages staff and tokens


class StaffMember(SQLModel, table=True):
    __tablename__ = "staff_member"
    __table_args__ = (NO_REUSE,)

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True)
    name: str = Field(default="", max_length=80)
    role: str = Field(default=StaffRole.EDITOR, max_length=16)
    created_at: datetime = _ts(nullable=False)
    disabled_at: datetime | None = _ts()


class StaffSignIn(SQLModel, table=True):
    """A one-time sign-in link sent by email: only a hash of its secret is kept, and it works
    once, for a short while."""

    __tablename__ = "staff_sign_in"

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff_member.id", index=True)
    secret_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts(nullable=False)
    expires_at: datetime = _ts(nullable=False)
    used_at: datetime | None = _ts()


class StaffSession(SQLModel, table=True):
    """A signed-in browser: the cookie holds the secret, the row only its hash."""

    __tablename__ = "staff_session"

    id: int | None = Field(default=None, primary_key=True)
    staff_id: int = Field(foreign_key="staff_member.id", index=True)
    secret_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts(nullable=False)
    expires_at: datetime = _ts(nullable=False)
    ended_at: datetime | None = _ts()


class ApiToken(SQLModel, table=True):
    """A token for the staff API, acting as the staff member who made it; stored hashed."""

    __tablename__ = "api_token"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=80)
    staff_id: int = Field(foreign_key="staff_member.id", index=True)
    secret_hash: str = Field(max_length=64, unique=True)
    created_at: datetime = _ts(nullable=False)
    last_used_at: datetime | None = _ts()
    revoked_at: datetime | None = _ts()


class AuditEntry(SQLModel, table=True):
    """Every staff action: who, what, on what, when."""

    __tablename__ = "audit_entry"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(nullable=False, index=True)
    # "staff:<email>", "token:<name> (<email>)" or "cli": kept as text, so the entry stays
    # readable after the staff member is removed.
    actor: str = Field(max_length=400)
    action: str = Field(max_length=64)
    target: str = Field(default="", max_length=200)
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class DraftState(StrEnum):
    DRAFT = "draft"  # being written
    IN_REVIEW = "in_review"  # submitted: waiting for a reviewer
    RETURNED = "returned"  # sent back with a comment
    SIGNED_OFF = "signed_off"  # a reviewer other than the author signed it off: publishable
    PUBLISHED = "published"


class SequenceDraft(SQLModel, table=True):
    """A course being written in the browser: what `sequence.toml` says, plus its review."""

    __tablename__ = "sequence_draft"
    __table_args__ = (NO_REUSE,)

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(max_length=64, index=True)
    # The published version it was started from (None for a new course): the review's diff.
    based_on_version_id: int | None = Field(default=None, foreign_key="sequence_version.id")
    title: str = Field(max_length=200)
    description: str = ""
    locale: str = Field(default="en", max_length=8)
    sender_name: str = Field(max_length=80)
    # The checker's settings of sequence.toml: max_grade, min_ease, allow_revealing_subjects.
    options: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    state: str = Field(default=DraftState.DRAFT, max_length=16)
    author_id: int = Field(foreign_key="staff_member.id")
    created_at: datetime = _ts(nullable=False)
    updated_at: datetime = _ts(nullable=False)
    submitted_at: datetime | None = _ts()
    reviewer_id: int | None = Field(default=None, foreign_key="staff_member.id")
    reviewed_at: datetime | None = _ts()
    review_by: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    review_comment: str = ""
    published_version_id: int | None = Field(default=None, foreign_key="sequence_version.id")


class LessonDraft(SQLModel, table=True):
    """One lesson of a draft: its front matter as fields, its body as Markdown."""

    __tablename__ = "lesson_draft"
    __table_args__ = (UniqueConstraint("draft_id", "position"), NO_REUSE)

    id: int | None = Field(default=None, primary_key=True)
    draft_id: int = Field(foreign_key="sequence_draft.id")
    position: int
    key: str = Field(max_length=64)
    subject: str = Field(default="", max_length=200)
    preheader: str = Field(default="", max_length=300)
    heading: str = Field(default="", max_length=120)
    delay_days: int = 0
    module: str = Field(default="recognize", max_length=32)
    never_skip: bool = _flag()
    anchor: str = Field(default="", max_length=32)
    body: str = ""
    sources: list[dict[str, str]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )


class OfferedCourse(SQLModel, table=True):
    """The courses the sign-up page offers, per language, in order (chosen by staff; until any
    is chosen, COURSE_SEQUENCES says)."""

    __tablename__ = "offered_course"
    __table_args__ = (PrimaryKeyConstraint("locale", "slug"),)

    locale: str = Field(max_length=8)
    slug: str = Field(max_length=64)
    position: int = 0


# --- outbound webhooks --------------------------------------------------------------------------


class WebhookEndpoint(SQLModel, table=True):
    """Another system staff connected: where to post, which events, and how it is doing."""

    __tablename__ = "webhook_endpoint"
    __table_args__ = (NO_REUSE,)

    id: int | None = Field(default=None, primary_key=True)
    url: str = Field(max_length=500)
    # ",enrolled,lesson.sent," (found with LIKE: the same on SQLite and PostgreSQL).
    events: str = Field(max_length=300)
    # "whsec_" + base64 of the key the payloads are signed with (Standard Webhooks).
    secret: str = Field(max_length=100)
    created_at: datetime = _ts(nullable=False)
    created_by: str = Field(default="", max_length=400)
    # Paused after repeated failures (or by staff): messages wait, nothing is posted.
    paused_at: datetime | None = _ts()
    paused_reason: str = Field(default="", max_length=500)
    failures: int = 0  # attempts that failed in a row
    last_error: str = Field(default="", max_length=500)
    last_success_at: datetime | None = _ts()
    # Posts that went through since it was connected: counted as each goes, since the messages
    # themselves are deleted after COURSE_WEBHOOK_KEEP_DAYS (and counting them read the outbox).
    delivered: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))


class WebhookMessage(SQLModel, table=True):
    """One event for one endpoint (the outbox): written with what it tells of, posted later."""

    __tablename__ = "webhook_message"
    __table_args__ = (
        # The same event is never queued twice for an endpoint (the sweep of sent lessons
        # looks back over a window).
        UniqueConstraint("endpoint_id", "event", "about", name="uq_webhook_message"),
        # Each endpoint's messages still to post, in the order they are posted (a receiver
        # gets events in the order they happened): posted ones, a row per lesson per endpoint,
        # once made PostgreSQL walk the primary key past millions of them, and one index of
        # every endpoint's walked a paused endpoint's backlog on every run.
        Index(
            "ix_webhook_message_due",
            "endpoint_id",
            "id",
            **_only_where("delivered_at IS NULL AND gave_up_at IS NULL"),
        ),
        # Posted messages by when, for the hourly task that forgets them after
        # COURSE_WEBHOOK_KEEP_DAYS (course.outbound.forget_posted).
        Index(
            "ix_webhook_message_posted",
            "delivered_at",
            **_only_where("delivered_at IS NOT NULL"),
        ),
        # Its id is the webhook-id receivers tell repeats apart by: never reused.
        NO_REUSE,
    )

    id: int | None = Field(default=None, primary_key=True)
    endpoint_id: int = Field(foreign_key="webhook_endpoint.id")
    event: str = Field(max_length=32)
    about: str = Field(max_length=64)  # what it is about: "delivery:12", "enrollment:3@<time>"
    payload: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = _ts(nullable=False)
    next_attempt_at: datetime = _ts(nullable=False)
    lease_until: datetime | None = _ts()
    attempts: int = 0
    delivered_at: datetime | None = _ts()
    gave_up_at: datetime | None = _ts()
    last_error: str = Field(default="", max_length=500)


class WebhookSweep(SQLModel, table=True):
    """How far sent lessons have been turned into webhook messages (one row)."""

    __tablename__ = "webhook_sweep"

    id: int = Field(default=1, primary_key=True)
    swept_to: datetime = _ts(nullable=False)
