"""What a reader changes about their course from their own links: for now, the switch to
aftercare when their loved one has started treatment."""

from __future__ import annotations

from sqlalchemy import case, func, or_, update
from sqlmodel import Session, col, select

from course.clock import Clock
from course.errors import InvalidInput, LinkEnded
from course.models import Enrollment, EnrollmentStatus, Lesson


def start_aftercare(session: Session, clock: Clock, enrollment_id: int) -> Enrollment:
    """The reader says treatment has started: from the next lesson on, send aftercare, and
    every never-skip lesson (overdose, safety) not sent yet.

    A lesson already in flight still goes out; sending it then moves on the same way (see
    recording.sent_writes), so the switch holds whenever it is clicked. Clicking twice is harmless.
    """
    enrollment = session.get(Enrollment, enrollment_id)
    if enrollment is None:
        raise LinkEnded()
    if enrollment.status != EnrollmentStatus.ACTIVE or enrollment.started_treatment_at:
        return enrollment
    has_aftercare = session.exec(
        select(func.count(col(Lesson.id))).where(
            col(Lesson.version_id) == enrollment.version_id, col(Lesson.module) == "aftercare"
        )
    ).one()
    if not has_aftercare:
        raise InvalidInput(
            "This course has no lessons about recovery to move on to.", "no_aftercare"
        )
    # The first lesson from the current one on that a switched reader still gets.
    target = (
        select(func.min(col(Lesson.position)))
        .where(
            col(Lesson.version_id) == col(Enrollment.version_id),
            col(Lesson.position) >= col(Enrollment.next_position),
            or_(col(Lesson.module) == "aftercare", col(Lesson.never_skip)),
        )
        .scalar_subquery()
    )
    # One statement, so it cannot interleave with a worker claiming or finishing a lesson: an
    # idle enrollment moves now; one with a lesson in flight moves when that lesson is recorded.
    session.execute(
        update(Enrollment)
        .where(
            col(Enrollment.id) == enrollment_id,
            col(Enrollment.status) == EnrollmentStatus.ACTIVE,
            col(Enrollment.started_treatment_at).is_(None),
        )
        .values(
            started_treatment_at=clock.now(),
            next_position=case(
                (
                    col(Enrollment.next_due_at).is_not(None),
                    func.coalesce(target, col(Enrollment.next_position)),
                ),
                else_=col(Enrollment.next_position),
            ),
        )
    )
    session.refresh(enrollment)
    return enrollment
