"""Taking in sign-ups. A request writes one row and answers; the work that depends on whether
the address is new, pending or enrolled happens here, moments later, off the request.

So the answer is the same, in status, body and time, whoever's address it is. The row is the
truth: if the broker loses the nudge, the next tick takes the request in.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from course.clock import Clock
from course.db import chunks
from course.errors import CourseError
from course.models import SignupRequest, Subscriber, row_id
from course.readers.signup import EnrollRequest, enroll, enroll_new_readers
from course.settings import Settings

log = logging.getLogger(__name__)


# Built once: a sign-up is the hot path of a burst.
_SIGNUP = insert(SignupRequest.__table__)  # type: ignore[attr-defined]


def request_signup(engine: Engine, clock: Clock, req: EnrollRequest) -> None:
    """Queue a checked sign-up to be taken in: one row, in a transaction of its own."""
    # A Core INSERT: nothing reads the row back, so the ORM's bookkeeping (and the RETURNING of
    # its id) would be a third of a sign-up's own CPU time for nothing.
    values = {"created_at": clock.now(), "email": req.email, "fields": req.to_fields()}
    if engine.dialect.name == "postgresql":
        # One statement is a transaction of its own: sent alone, without BEGIN and COMMIT, it
        # is one round trip to the server instead of three.
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(_SIGNUP, values)
        return
    with engine.begin() as conn:  # SQLite: begun IMMEDIATE, as every write is (course.db)
        conn.execute(_SIGNUP, values)


def take_in(engine: Engine, settings: Settings, clock: Clock, *, limit: int) -> list[int]:
    """Enroll the waiting sign-ups, oldest first; return the confirmation emails to enqueue
    (after commit). New addresses are written together, in a few multi-row statements (a burst
    of sign-ups is mostly those); each other request on its own, as what it does depends on
    what is there."""
    waiting = select(SignupRequest).order_by(col(SignupRequest.id)).limit(limit)
    if engine.dialect.name == "postgresql":
        waiting = waiting.with_for_update(skip_locked=True)
    ids: list[int] = []
    done: list[int] = []
    with Session(engine, expire_on_commit=False) as session:
        requests = [
            (row_id(r), EnrollRequest.from_fields(r.fields)) for r in session.exec(waiting).all()
        ]
        new, others = _new_addresses(session, requests)
        if new:
            try:
                with session.begin_nested():
                    ids += enroll_new_readers(
                        session, settings, clock, reqs=[req for _, req in new]
                    )
                done += [request_id for request_id, _ in new]
            except (CourseError, IntegrityError) as exc:
                # A course withdrawn meanwhile, an address added elsewhere at this moment:
                # each is then taken in on its own below, which says which and why.
                log.info("%d sign-ups taken in one by one: %s", len(requests), type(exc).__name__)
                others = requests
        for request_id, req in others:
            try:
                with session.begin_nested():
                    ids += enroll(session, settings, clock, req=req)
            except CourseError as exc:  # the course was withdrawn since the request was made
                log.warning("sign-up %s not taken in: %s", request_id, exc.message)
            except IntegrityError:
                # Another process took in a sign-up for the same new address at this moment:
                # this one waits for the next round, when the address exists.
                log.info("sign-up %s waits: its address was being added elsewhere", request_id)
                continue
            done.append(request_id)
        # Set-based, without the ORM matching each deleted row against every object the
        # session holds: row by row, that made a burst's intake quadratic.
        for some in chunks(done):
            session.execute(
                delete(SignupRequest)
                .where(col(SignupRequest.id).in_(some))
                .execution_options(synchronize_session=False)
            )
        session.commit()
    return ids


def _new_addresses(
    session: Session, requests: list[tuple[int, EnrollRequest]]
) -> tuple[list[tuple[int, EnrollRequest]], list[tuple[int, EnrollRequest]]]:
    """The requests of addresses nobody has, the first of each (taken in together), and the
    rest (one by one, since what they do depends on what is there)."""
    known: set[str] = set()
    for some in chunks(sorted({req.email for _, req in requests})):
        found = session.exec(select(col(Subscriber.email)).where(col(Subscriber.email).in_(some)))
        known.update(found.all())
    new: list[tuple[int, EnrollRequest]] = []
    others: list[tuple[int, EnrollRequest]] = []
    for request in requests:
        email = request[1].email
        (others if email in known else new).append(request)
        known.add(email)
    # In the order of the unique index the INSERT checks: two ticks taking in the same new
    # addresses at once then wait for each other instead of deadlocking.
    new.sort(key=lambda request: request[1].email)
    return new, others
