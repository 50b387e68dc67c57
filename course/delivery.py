"""Claim due work, send it, record what happened. The database is the truth: every email exists
as a delivery row before anything is enqueued, and a row whose lease runs out is handed out again.

Exactly once: a delivery is claimed by one worker (lease owner) before sending, and marked sent in
the same moment the SMTP server accepts it, together with the enrollment's next due time. The
only duplicate left is a message the server accepted just before its worker died, before the
commit: at most one per killed worker process.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any

from markupsafe import escape
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Connection,
    DateTime,
    Engine,
    FromClause,
    Insert,
    Integer,
    Select,
    String,
    any_,
    bindparam,
    cast,
    func,
    literal,
    or_,
    select,
    true,
    union_all,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from course import catalog
from course.catalog import VERSION_KEY_COLUMNS, LessonPlan
from course.clock import Clock
from course.db import is_sqlite, read_only
from course.enrollment import DATA_LINK_TTL
from course.mailer import ConnectionProblem, Mailer, PermanentError, SendError, TransientError
from course.message import BodyTemplate, build_encoded
from course.models import (
    Delivery,
    DeliveryKind,
    DeliveryStatus,
    Enrollment,
    EnrollmentStatus,
    Lesson,
    SequenceVersion,
    Subscriber,
)
from course.recording import Recorder, recorder_for
from course.render import (
    NAME_STAND_IN,
    Content,
    Layout,
    Links,
    Persona,
    RenderedEmail,
    changes_the_name,
    render_email,
)
from course.settings import Settings
from course.tokens import Purpose, TokenMaker

log = logging.getLogger(__name__)


def _chunks(ids: list[int], size: int) -> list[list[int]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


# --- the beat tick ---------------------------------------------------------------------------


def release_expired(engine: Engine, settings: Settings, clock: Clock, limit: int) -> list[int]:
    """Pending deliveries nobody holds (lost message, killed worker, retry time reached):
    lease them anew so they can be enqueued again."""
    now = clock.now()
    no_lease = Delivery.lease_until.is_(None)  # type: ignore[union-attr]
    lapsed = Delivery.lease_until <= now  # type: ignore[operator]
    pending = Delivery.status == DeliveryStatus.PENDING
    expired: Any
    if is_sqlite(engine):
        # SQLite reads "no lease OR lapsed" by walking every pending row of the index (2 ms for
        # 20,000, under the write lock that every sending worker then waits for); as two
        # searches of it the same answer takes a tenth of a millisecond.
        expired = union_all(
            select(Delivery.id).where(pending, no_lease),
            select(Delivery.id).where(pending, lapsed),
        ).limit(limit)
    else:
        expired = (
            select(Delivery.id)
            .where(pending, or_(no_lease, lapsed))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
    stmt = (
        update(Delivery)
        .where(Delivery.id.in_(expired.scalar_subquery()))  # type: ignore[union-attr]
        .values(lease_until=now + timedelta(seconds=settings.lease_seconds), lease_owner=None)
        .returning(Delivery.id)
    )
    with engine.begin() as session:
        return list(session.execute(stmt).scalars())


def claim_due(engine: Engine, settings: Settings, clock: Clock, limit: int) -> list[int]:
    """Turn due enrollments into delivery rows, in one transaction; return the new delivery ids.

    Set-based in the database: built row by row in Python, 5,000 rows took the tick 0.1 s on
    SQLite (holding the write lock every sending worker waits for) and 0.7 s on PostgreSQL.
    """
    now = clock.now()
    due = (
        select(Enrollment.id)
        .where(Enrollment.status == EnrollmentStatus.ACTIVE, Enrollment.next_due_at <= now)  # type: ignore[operator]
        .order_by(Enrollment.next_due_at)
        .limit(limit)
    )
    if not is_sqlite(engine):
        due = due.with_for_update(skip_locked=True)
    # While a lesson is in flight the enrollment has no due time; sending sets the next one.
    claim = (
        update(Enrollment)
        .where(Enrollment.id.in_(due.scalar_subquery()))  # type: ignore[union-attr]
        .values(next_due_at=None)
        .returning(Enrollment.id, Enrollment.next_position)
    )
    lease_until = now + timedelta(seconds=settings.lease_seconds)

    def new_rows(claimed: FromClause) -> Insert:
        enrollment_id, position = claimed.c.id, claimed.c.next_position
        kind = DeliveryKind.LESSON.value
        row = {
            "enrollment_id": enrollment_id,
            "kind": literal(kind),
            "position": position,
            "message_id": _message_id_sql(
                engine, kind, enrollment_id, position, settings.message_domain
            ),
            "status": literal(DeliveryStatus.PENDING.value),
            "attempts": literal(0),
            "lease_until": literal(lease_until, DateTime(timezone=True)),
            "created_at": literal(now, DateTime(timezone=True)),
        }
        # "WHERE true": SQLite would read "SELECT ... FROM x ON CONFLICT" as a join's ON.
        rows = select(*row.values()).where(true())
        dialect = sqlite if is_sqlite(engine) else postgresql
        return (
            dialect.insert(Delivery)
            .from_select(list(row), rows)
            .on_conflict_do_nothing()
            .returning(Delivery.id)
        )

    with engine.begin() as conn:
        if is_sqlite(engine):
            # SQLite has no UPDATE inside WITH: the claimed ids come back and go in again as one
            # JSON parameter (one parameter per id would meet SQLite's limit of 32,766 with a
            # large COURSE_CLAIM_BATCH).
            ids = [eid for eid, _ in conn.execute(claim)]
            if not ids:
                return []
            listed = func.json_each(json.dumps(ids)).table_valued("value")
            claimed = (
                select(Enrollment.id, Enrollment.next_position)
                .where(Enrollment.id.in_(select(listed.c.value)))  # type: ignore[union-attr]
                .subquery()
            )
            return list(conn.execute(new_rows(claimed)).scalars())
        claimed_cte = claim.cte("claimed")
        return list(conn.execute(new_rows(claimed_cte).add_cte(claimed_cte)).scalars())


def _message_id_sql(
    engine: Engine,
    kind: str,
    enrollment_id: ColumnElement[int],
    position: ColumnElement[int],
    domain: str,
) -> ColumnElement[str]:
    """new_message_id, worked out by the database for a whole set of rows."""
    if is_sqlite(engine):
        token = func.lower(func.hex(func.randomblob(6)))
    else:
        # gen_random_uuid() is built in (PostgreSQL 13+); its first twelve digits are random.
        token = func.left(func.replace(cast(func.gen_random_uuid(), String), "-", ""), 12)
    return (
        literal(f"<{kind}.")
        + cast(enrollment_id, String)
        + "."
        + cast(position, String)
        + "."
        + token
        + literal(f"@{domain}>")
    )


def tick(
    engine: Engine,
    settings: Settings,
    clock: Clock,
    budget_seconds: float = 2.0,
    hand_out: Callable[[list[list[int]]], object] | None = None,
) -> list[list[int]]:
    """One beat tick: re-lease what was lost, turn due enrollments into deliveries, and return
    the batches of delivery ids to enqueue (after commit, so a task never runs before its row).

    With `hand_out`, each committed claim's batches go to it at once: with a large backlog the
    workers start sending while the tick is still claiming the rest.
    """
    started = time.monotonic()
    out: list[list[int]] = []

    def commit(ids: list[int]) -> None:
        batches = _chunks(ids, settings.send_batch)
        if hand_out is not None and batches:
            hand_out(batches)
        out.extend(batches)

    commit(release_expired(engine, settings, clock, settings.claim_batch * 10))
    while time.monotonic() - started < budget_seconds:
        fresh = claim_due(engine, settings, clock, settings.claim_batch)
        commit(fresh)
        if len(fresh) < settings.claim_batch:
            break
    return out


# --- sending a batch -------------------------------------------------------------------------


@dataclass
class BatchResult:
    sent: list[int] = field(default_factory=list)
    retried: list[int] = field(default_factory=list)
    bounced: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    skipped: list[int] = field(default_factory=list)


# What sending needs of a delivery, its enrollment and its reader: read as plain rows, because
# building ORM objects for them cost more per email than rendering it.
@dataclass(frozen=True, slots=True)
class DeliveryRow:
    id: int
    kind: str
    position: int
    attempts: int
    message_id: str


@dataclass(frozen=True, slots=True)
class EnrollmentRow:
    id: int
    link_key: str
    status: str
    version_id: int
    started_treatment_at: datetime | None


@dataclass(frozen=True, slots=True)
class SubscriberRow:
    id: int
    email: str
    first_name: str
    time_zone: str
    send_hour: int
    relationship: str
    substance: str
    suppressed_at: datetime | None


_JOB_COLUMNS = (
    *(getattr(Delivery, f) for f in DeliveryRow.__slots__),
    *(getattr(Enrollment, f) for f in EnrollmentRow.__slots__),
    *(getattr(Subscriber, f) for f in SubscriberRow.__slots__),
    *VERSION_KEY_COLUMNS,
)
_D = len(DeliveryRow.__slots__)
_E = _D + len(EnrollmentRow.__slots__)
_S = _E + len(SubscriberRow.__slots__)


@dataclass
class Job:
    delivery: DeliveryRow
    enrollment: EnrollmentRow
    subscriber: SubscriberRow
    version: SequenceVersion
    lesson: Lesson | None
    # First lesson of the aftercare module after this one, if the sequence has one.
    aftercare_from: int | None = None
    # The lesson after this one if the reader has switched to aftercare (never-skip included).
    next_if_switched: int | None = None

    @property
    def offers_stage_switch(self) -> bool:
        return (
            self.lesson is not None
            and self.lesson.module in ("recognize", "act")
            and self.aftercare_from is not None
            and self.enrollment.started_treatment_at is None
        )


def _claimable(now: datetime | BindParameter[datetime]) -> tuple[ColumnElement[bool], ...]:
    """Which of a batch's rows a worker may take. The status is compared through an expression
    on purpose, so that no index can serve it and the rows are found by id: after a quiet
    spell the statistics say nothing is pending, and PostgreSQL then scanned every pending row
    of a backlog (through ix_delivery_pending) to claim each batch of 200."""
    return (
        Delivery.status.concat("") == DeliveryStatus.PENDING,  # type: ignore[attr-defined]
        or_(Delivery.lease_owner.is_(None), Delivery.lease_until <= now),  # type: ignore[union-attr,operator]
    )


def claim_batch(
    engine: Engine, settings: Settings, clock: Clock, ids: Iterable[int], owner: str
) -> list[int]:
    """Take the lease on those ids nobody else holds. A duplicate task for the same ids finds
    them taken and sends nothing."""
    now = clock.now()
    stmt = (
        update(Delivery)
        .where(Delivery.id.in_(list(ids)), *_claimable(now))  # type: ignore[union-attr]
        .values(lease_owner=owner, lease_until=now + timedelta(seconds=settings.lease_seconds))
        .returning(Delivery.id)
    )
    with engine.begin() as session:
        return list(session.execute(stmt).scalars())


def claim_and_load(
    engine: Engine, settings: Settings, clock: Clock, ids: list[int], owner: str
) -> tuple[list[Job], LessonPlan]:
    """claim_batch, then load_jobs for what was claimed.

    On PostgreSQL the claim and the readers' rows are one statement (an UPDATE ... RETURNING
    that the SELECT joins): a batch's preparation is time in which this worker's SMTP
    connection sits idle, and with two workers on two cores it took ~40 ms per 200 lessons as
    two transactions. On SQLite they stay two transactions: the load takes no lock there.
    """
    if engine.dialect.name != "postgresql":
        claimed = claim_batch(engine, settings, clock, ids, owner)
        with Session(read_only(engine), expire_on_commit=False) as session:
            loaded = load_jobs(session, claimed)
            session.commit()
        return loaded
    stmt, values = claim_and_load_statement(
        ids, owner, clock.now(), timedelta(seconds=settings.lease_seconds)
    )
    with Session(engine, expire_on_commit=False) as session:
        loaded = _jobs(session, session.execute(stmt, values))
        session.commit()
    return loaded


def _claim_and_load() -> Select[Any]:
    claimed = (
        update(Delivery)
        .where(
            Delivery.id == any_(bindparam("ids", type_=postgresql.ARRAY(Integer))),
            *_claimable(bindparam("now", type_=DateTime(timezone=True))),
        )
        .values(lease_owner=bindparam("owner"), lease_until=bindparam("until"))
        .returning(*(getattr(Delivery, f) for f in DeliveryRow.__slots__), Delivery.enrollment_id)
        .cte("claimed")
    )
    return (
        select(
            *(claimed.c[f] for f in DeliveryRow.__slots__),
            *_JOB_COLUMNS[_D:],
        )
        .select_from(claimed)
        .join(Enrollment, Enrollment.id == claimed.c.enrollment_id)  # type: ignore[arg-type]
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)  # type: ignore[arg-type]
        .join(SequenceVersion, SequenceVersion.id == Enrollment.version_id)  # type: ignore[arg-type]
        .order_by(claimed.c.id)
    )


# Built once: building it took ~2 ms, longer than the database takes to run it for 200 rows.
_CLAIM_AND_LOAD = _claim_and_load()


def claim_and_load_statement(
    ids: list[int], owner: str, now: datetime, lease: timedelta
) -> tuple[Select[Any], dict[str, Any]]:
    """PostgreSQL: the statement and values that lease the claimable rows among `ids` to `owner`
    and return them as rows of _JOB_COLUMNS (the reader's enrollment, subscriber and sequence
    version joined in), ordered by id."""
    return _CLAIM_AND_LOAD, {"ids": ids, "owner": owner, "now": now, "until": now + lease}


def load_jobs(session: Session, ids: list[int]) -> tuple[list[Job], LessonPlan]:
    """Everything needed to render and send a batch: one query for the readers, and the few
    sequence versions and lessons they share (whose shape is the batch's plan) from the
    catalog, which reads each published version once per process."""
    stmt = (
        select(*_JOB_COLUMNS)
        .join(Enrollment, Enrollment.id == Delivery.enrollment_id)  # type: ignore[arg-type]
        .join(Subscriber, Subscriber.id == Enrollment.subscriber_id)  # type: ignore[arg-type]
        .join(SequenceVersion, SequenceVersion.id == Enrollment.version_id)  # type: ignore[arg-type]
        .where(Delivery.id.in_(ids))  # type: ignore[union-attr]
        .order_by(Delivery.id)
    )
    return _jobs(session, session.execute(stmt))


def _jobs(session: Session, result: Iterable[Any]) -> tuple[list[Job], LessonPlan]:
    """Jobs from rows of _JOB_COLUMNS, with the versions and lessons they need."""
    rows = [
        (DeliveryRow(*row[:_D]), EnrollmentRow(*row[_D:_E]), SubscriberRow(*row[_E:_S]), row[_S:])
        for row in result
    ]
    versions = catalog.versions(session, (tuple(key) for *_, key in rows))
    plan = LessonPlan.of(versions.values())
    jobs = [
        Job(
            d,
            e,
            s,
            versions[e.version_id].version,
            versions[e.version_id].lessons.get(d.position)
            if d.kind == DeliveryKind.LESSON
            else None,
            plan.aftercare_after(e.version_id, d.position),
            plan.next_if_switched(e.version_id, d.position),
        )
        for d, e, s, _ in rows
    ]
    return jobs, plan


def _sendable(job: Job) -> bool:
    if job.subscriber.suppressed_at is not None:
        return False
    if job.delivery.kind == DeliveryKind.CONFIRM:
        return job.enrollment.status == EnrollmentStatus.PENDING
    if job.delivery.kind == DeliveryKind.DATA:
        return True  # asked for just now, whatever the course's state
    return job.enrollment.status == EnrollmentStatus.ACTIVE and job.lesson is not None


# Stand-ins for the per-person parts of an email, so each lesson is rendered (and its CSS
# inlined) once per persona variant, not once per reader.
_UNSUBSCRIBE = "https://homeward.invalid/unsubscribe-url-stand-in"
_CONFIRM = "https://homeward.invalid/confirm-url-stand-in"
_STAGE = "https://homeward.invalid/stage-url-stand-in"
_DATA = "https://homeward.invalid/data-url-stand-in"


# One pass over a rendered text finds every stand-in; the capturing group keeps them in the split.
_STAND_INS = re.compile(
    "("
    + "|".join(re.escape(x) for x in (NAME_STAND_IN, _UNSUBSCRIBE, _CONFIRM, _STAGE, _DATA))
    + ")"
)


class _Variant:
    """One persona variant of an email, its parts cut at the stand-ins once, ready to fill in."""

    __slots__ = ("subject", "html", "text", "checked", "stray")

    def __init__(self, rendered: RenderedEmail) -> None:
        self.subject = rendered.subject
        self.html = BodyTemplate(rendered.html, _STAND_INS)
        self.text = BodyTemplate(rendered.text, _STAND_INS)
        checked = (rendered.html, rendered.text, rendered.subject)
        # The stand-ins whose values end up in the parts checked for a mangled first name.
        self.checked = frozenset(x for part in checked for x in _STAND_INS.findall(part))
        # The lesson transformed the name (`lessons check` refuses that; kept for older versions).
        self.stray = changes_the_name(rendered)


class Composer:
    """Renders the email for a job: the lesson, the confirmation request or the data link."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.layout_dir = settings.lessons_dir / "_layout"
        self.layout = Layout.load(self.layout_dir)
        self._variants: dict[tuple[Any, ...], _Variant] = {}
        self.envelope_sender = parseaddr(settings.from_address)[1]
        self._base_url = settings.base_url.rstrip("/")
        self._tokens = {p: TokenMaker(settings.secret_key, p, clock) for p in Purpose}

    def link(self, path: str) -> str:
        return f"{self._base_url}{path}"

    def _content(self, job: Job) -> Content:
        if job.lesson is not None:
            return Content(
                subject=job.lesson.subject,
                heading=job.lesson.heading,
                preheader=job.lesson.preheader,
                body=job.lesson.body,
                sources=job.lesson.sources,
                module=job.lesson.module,
                sender_name=job.version.sender_name,
                locale=job.version.locale,
            )
        return layout_content(self.layout_dir, job.version, job.delivery.kind)

    def _key(self, job: Job, stage: bool) -> tuple[Any, ...]:
        # Everything the rendered text depends on except the per-person parts (stand-ins).
        subscriber = job.subscriber
        version = job.version
        # The version as the catalog knows it (ids alone may come back in a recreated database).
        what = (version.id, version.content_hash, version.published_at, job.delivery.kind)
        return (
            *what,
            job.lesson.position if job.lesson is not None else None,
            bool(subscriber.first_name),
            subscriber.relationship,
            subscriber.substance,
            stage,
        )

    def _variant(self, job: Job, stage: bool) -> _Variant:
        key = self._key(job, stage)
        cached = self._variants.get(key)
        if cached is None:
            content = self._content(job)
            subscriber = job.subscriber
            persona = Persona(
                first_name=NAME_STAND_IN if subscriber.first_name else "",
                relationship=subscriber.relationship,
                substance=subscriber.substance,
            )
            links = Links(
                unsubscribe_url=_UNSUBSCRIBE,
                postal_address=self.settings.postal_address,
                base_url=self.settings.base_url,
                stage_url=_STAGE if stage else None,
            )
            extra = {
                "confirm_url": _CONFIRM,
                "data_url": _DATA,
                "data_link_hours": int(DATA_LINK_TTL.total_seconds() // 3600),
                "sequence_title": job.version.title,
                "confirm_days": self.settings.confirm_ttl_days,
            }
            if len(self._variants) > 4096:
                self._variants.clear()
            rendered = render_email(content, persona, links, self.layout, extra)
            cached = self._variants[key] = _Variant(rendered)
        return cached

    def compose(self, job: Job) -> bytes:
        s = self.settings
        key = job.enrollment.link_key
        tokens = self._tokens
        unsubscribe_url = self.link("/unsubscribe/" + tokens[Purpose.UNSUBSCRIBE](key))
        kind = job.delivery.kind
        confirm_url = (
            self.link("/confirm/" + tokens[Purpose.CONFIRM](key))
            if kind == DeliveryKind.CONFIRM
            else ""
        )
        data_url = (
            self.link("/my-data/" + tokens[Purpose.DATA](key)) if kind == DeliveryKind.DATA else ""
        )
        stage = job.offers_stage_switch
        stage_url = self.link("/stage/" + tokens[Purpose.STAGE](key)) if stage else ""
        variant = self._variant(job, stage)
        plain = {
            NAME_STAND_IN: job.subscriber.first_name,
            _UNSUBSCRIBE: unsubscribe_url,
            _CONFIRM: confirm_url,
            _STAGE: stage_url,
            _DATA: data_url,
        }
        if variant.stray or any("\ue000" in plain[k] for k in variant.checked):
            raise RuntimeError("a lesson transformed the first name; it cannot be personalized")
        return build_encoded(
            subject=_STAND_INS.sub(lambda m: plain[m.group(0)], variant.subject),
            text_body=variant.text.encode(plain),
            html_body=variant.html.encode({k: str(escape(v)) for k, v in plain.items()}),
            from_address=self.envelope_sender,
            sender_name=job.version.sender_name,
            to=job.subscriber.email,
            message_id=job.delivery.message_id,
            unsubscribe_url=unsubscribe_url,
            unsubscribe_mailto=s.unsubscribe_mailto,
            date=self.clock.now(),
        )


def layout_content(layout_dir: Any, version: SequenceVersion, kind: str) -> Content:
    """A service email from the layout folder (`confirm.md`, `data.md`), in the course's language."""
    from course.lessons import split_front_matter

    name = f"{kind}.md" if version.locale == "en" else f"{kind}.{version.locale}.md"
    path = layout_dir / name
    if not path.exists():
        path = layout_dir / f"{kind}.md"
    data, body, _ = split_front_matter(path.read_text(encoding="utf-8"), path)
    return Content(
        subject=data["subject"],
        preheader=data.get("preheader", ""),
        body=body,
        sender_name=version.sender_name,
        locale=version.locale,
        action_label=data.get("action", ""),
        action_url=data.get("action_url", ""),
    )


def send_batch(
    engine: Engine,
    settings: Settings,
    clock: Clock,
    mailer: Mailer,
    ids: list[int],
    composer: Composer | None = None,
) -> BatchResult:
    """Send the deliveries in `ids` that this worker can claim, recording each outcome at once."""
    result = BatchResult()
    owner = uuid.uuid4().hex
    jobs, plan = claim_and_load(engine, settings, clock, ids, owner)
    result.skipped = sorted(set(ids) - {j.delivery.id for j in jobs})
    if not jobs:
        return result
    composer = composer or Composer(settings, clock)
    cancel = [j.delivery.id for j in jobs if not _sendable(j)]
    if cancel:
        _finish(engine, cancel, owner, DeliveryStatus.CANCELLED, clock.now(), None)
        result.skipped.extend(cancel)  # type: ignore[arg-type]
    pending = [j for j in jobs if _sendable(j)]
    with recorder_for(engine) as recorder:
        _send_each(
            engine, settings, clock, mailer, composer, recorder, owner, pending, plan, result
        )
    return result


def _send_each(
    engine: Engine,
    settings: Settings,
    clock: Clock,
    mailer: Mailer,
    composer: Composer,
    recorder: Recorder,
    owner: str,
    pending: list[Job],
    plan: LessonPlan,
    result: BatchResult,
) -> None:
    # Stop well inside the lease, so a slow batch never overlaps the worker that retries it.
    deadline = clock.now() + timedelta(seconds=settings.lease_seconds / 2)
    ahead: bytes | Exception | None = None  # the next job's email, composed in the SMTP wait
    # The message the server accepted last, and when. Its "sent" write goes out while the server
    # reads the next MAIL command, and is waited for before the next message's data goes out,
    # so before that one can be accepted: at most one accepted message is ever unrecorded, as
    # when recording each one straight away.
    accepted: tuple[Job, datetime] | None = None
    writing = False

    def write_accepted() -> None:
        nonlocal writing
        if accepted is not None and not writing:
            recorder.record_sent(settings, accepted[0], owner, accepted[1], plan)
            writing = True

    def record_accepted() -> None:
        nonlocal accepted, writing
        write_accepted()
        if accepted is not None:
            job, accepted, writing = accepted[0], None, False
            recorder.wait()
            result.sent.append(job.delivery.id)

    for index, job in enumerate(pending):
        if clock.now() >= deadline:
            record_accepted()
            result.released = _release(
                engine, [j.delivery.id for j in pending[index:]], owner, clock.now()
            )
            break
        delivery_id: int = job.delivery.id  # type: ignore[assignment]
        message = ahead if ahead is not None else _compose(composer, job)
        ahead = None
        if isinstance(message, Exception):  # a lesson that cannot render must not block the rest
            record_accepted()
            _finish(
                engine,
                [delivery_id],
                owner,
                DeliveryStatus.FAILED,
                clock.now(),
                f"render: {message}",
            )
            result.failed.append(delivery_id)
            continue

        try:
            # Both run whatever happens, before the data goes out or start() raises.
            mailer.start(
                message,
                composer.envelope_sender,
                job.subscriber.email,
                meanwhile=record_accepted,
                first=write_accepted,
            )
            # The server is taking in the message: build the next one meanwhile.
            if index + 1 < len(pending):
                ahead = _compose(composer, pending[index + 1])
            mailer.finish()
        except PermanentError as exc:
            record_bounce(engine, job, owner, clock.now(), exc)
            result.bounced.append(delivery_id)
        except TransientError as exc:
            if record_retry(engine, settings, job, owner, clock.now(), exc):
                result.retried.append(delivery_id)
            else:
                result.failed.append(delivery_id)
            if isinstance(exc, ConnectionProblem):
                # The server is down for everyone: don't burn through the batch, say so loudly.
                log.error(
                    "SMTP server unreachable (%s); %d deliveries left for later",
                    exc,
                    len(pending) - index - 1,
                )
                rest = [j.delivery.id for j in pending[index + 1 :]]
                result.released = _release(engine, rest, owner, clock.now() + _backoff(settings, 1))  # type: ignore[arg-type]
                break
        else:
            accepted = (job, clock.now())
    record_accepted()


def _compose(composer: Composer, job: Job) -> bytes | Exception:
    """The job's email, or why it cannot be rendered (logged here, recorded by the caller)."""
    try:
        return composer.compose(job)
    except Exception as exc:
        log.exception("delivery %s cannot be rendered", job.delivery.id)
        return exc


def record_bounce(engine: Engine, job: Job, owner: str, now: datetime, exc: SendError) -> None:
    """A permanent refusal: stop this person's courses and never write to the address again."""
    reason = str(exc)[:500]
    with engine.begin() as session:
        _finish_in(session, [job.delivery.id], owner, DeliveryStatus.BOUNCED, now, reason)  # type: ignore[list-item]
        session.execute(
            update(Enrollment)
            .where(
                Enrollment.subscriber_id == job.subscriber.id,
                Enrollment.status.in_([EnrollmentStatus.PENDING, EnrollmentStatus.ACTIVE]),  # type: ignore[attr-defined]
            )
            .values(status=EnrollmentStatus.BOUNCED, next_due_at=None, ended_at=now)
        )
        session.execute(
            update(Subscriber)
            .where(Subscriber.id == job.subscriber.id)
            .values(suppressed_at=now, suppressed_reason=reason)
        )
    log.warning("hard bounce for delivery %s: %s", job.delivery.id, reason)


def _backoff(settings: Settings, attempts: int) -> timedelta:
    return timedelta(seconds=min(settings.retry_base_seconds * 2 ** (attempts - 1), 6 * 3600))


def record_retry(
    engine: Engine, settings: Settings, job: Job, owner: str, now: datetime, exc: SendError
) -> bool:
    """A temporary failure: try again after an exponential backoff, up to max_attempts."""
    attempts = job.delivery.attempts + 1
    give_up = attempts >= settings.max_attempts
    with engine.begin() as session:
        session.execute(
            update(Delivery)
            .where(Delivery.id == job.delivery.id, Delivery.lease_owner == owner)
            .values(
                attempts=attempts,
                last_error=str(exc)[:500],
                lease_owner=None,
                status=DeliveryStatus.FAILED if give_up else DeliveryStatus.PENDING,
                lease_until=None if give_up else now + _backoff(settings, attempts),
            )
        )
    if give_up:
        log.error("delivery %s failed %d times, giving up: %s", job.delivery.id, attempts, exc)
    return not give_up


def _release(engine: Engine, ids: list[int], owner: str, when: datetime) -> list[int]:
    if ids:
        with engine.begin() as session:
            session.execute(
                update(Delivery)
                .where(Delivery.id.in_(ids), Delivery.lease_owner == owner)  # type: ignore[union-attr]
                .values(lease_owner=None, lease_until=when)
            )
    return ids


def _finish(
    engine: Engine, ids: list[int], owner: str, status: str, now: datetime, error: str | None
) -> None:
    with engine.begin() as session:
        _finish_in(session, ids, owner, status, now, error)


def _finish_in(
    session: Connection, ids: list[int], owner: str, status: str, now: datetime, error: str | None
) -> None:
    session.execute(
        update(Delivery)
        .where(Delivery.id.in_(ids), Delivery.lease_owner == owner)  # type: ignore[union-attr]
        .values(status=status, lease_owner=None, lease_until=None, last_error=error)
    )
