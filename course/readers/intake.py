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
from course.errors import CourseError
from course.models import SignupRequest, row_id
from course.readers.signup import EnrollRequest, enroll
from course.settings import Settings

log = logging.getLogger(__name__)


def request_signup(session: Session, clock: Clock, req: EnrollRequest) -> None:
    """Queue a checked sign-up to be taken in."""
    # A Core INSERT: nothing reads the row back, so the ORM's bookkeeping (and the RETURNING of
    # its id) would be a third of a sign-up's own CPU time for nothing.
    session.execute(
        insert(SignupRequest.__table__),  # type: ignore[attr-defined]
        {"created_at": clock.now(), "email": req.email, "fields": req.to_fields()},
    )


def take_in(engine: Engine, settings: Settings, clock: Clock, *, limit: int) -> list[int]:
    """Enroll the waiting sign-ups, oldest first, each in its own transaction; return the
    confirmation emails to enqueue (after commit)."""
    waiting = select(SignupRequest).order_by(col(SignupRequest.id)).limit(limit)
    if engine.dialect.name == "postgresql":
        waiting = waiting.with_for_update(skip_locked=True)
    ids: list[int] = []
    with Session(engine, expire_on_commit=False) as session:
        requests = list(session.exec(waiting).all())
        for request in requests:
            try:
                with session.begin_nested():
                    ids += enroll(
                        session, settings, clock, req=EnrollRequest.from_fields(request.fields)
                    )
            except CourseError as exc:  # the course was withdrawn since the request was made
                log.warning("sign-up %s not taken in: %s", request.id, exc.message)
            except IntegrityError:
                # Another process took in a sign-up for the same new address at this moment:
                # this one waits for the next round, when the address exists.
                log.info("sign-up %s waits: its address was being added elsewhere", request.id)
                continue
            session.execute(delete(SignupRequest).where(col(SignupRequest.id) == row_id(request)))
        session.commit()
    return ids
