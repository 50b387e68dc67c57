"""Which enrollment a reader's link leads to. Links name an unguessable key, never a row id."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, col, select

from course.clock import as_utc
from course.errors import LinkEnded
from course.models import Enrollment
from course.tokens import Link

# A link's signing time has whole seconds; the row's creation time does not.
_SIGNED_IN_THE_SAME_SECOND = timedelta(seconds=1)


def linked_enrollment(session: Session, link: Link) -> Enrollment:
    """The enrollment a reader's link names, or LinkEnded if it is gone.

    A link names the enrollment's link key, which no other enrollment ever gets. A link signed
    before keys existed names an id: it is honoured only for an enrollment that existed when the
    link was signed, because a later one may have been given the same id (SQLite reused them).
    """
    if link.key is not None:
        found = session.exec(select(Enrollment).where(col(Enrollment.link_key) == link.key)).first()
    else:
        found = session.get(Enrollment, link.legacy_id)
        if found is not None and as_utc(found.created_at) >= (
            link.signed_at + _SIGNED_IN_THE_SAME_SECOND
        ):
            found = None
    if found is None:
        raise LinkEnded()
    return found
