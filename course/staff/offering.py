"""Which courses the sign-up page offers, per language, chosen by staff. Until they choose,
COURSE_SEQUENCES says (course.catalog.offered)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete
from sqlmodel import Session

from course.catalog import Offer, offered, offers_changed, published
from course.clock import Clock
from course.errors import InvalidInput
from course.models import OfferedCourse
from course.settings import Settings
from course.staff import audit
from course.staff.accounts import Actor


@dataclass(frozen=True)
class Choice:
    offer: Offer
    shown: bool  # on the sign-up page now


def current(session: Session, settings: Settings) -> list[Choice]:
    """Every published course, and whether the sign-up page offers it."""
    shown = {
        o.version.slug
        for offers in offered(session, settings.sequences, settings.default_sequence).values()
        for o in offers
    }
    return [Choice(o, o.version.slug in shown) for o in published(session)]


def choose(session: Session, clock: Clock, actor: Actor, *, slugs: list[str]) -> None:
    """Offer exactly these courses (each in its own language), in the order of the list."""
    actor.require_review()
    courses = {o.version.slug: o for o in published(session)}
    unknown = [s for s in slugs if s not in courses]
    if unknown:
        raise InvalidInput(f"No published course is called {unknown[0]}.", "unknown_course", "")
    if not slugs:
        raise InvalidInput(
            "Offer at least one course: the sign-up page cannot be empty.", "offer_empty", ""
        )
    session.execute(delete(OfferedCourse))
    offers_changed(session)
    for position, slug in enumerate(slugs):
        session.add(
            OfferedCourse(locale=courses[slug].version.locale, slug=slug, position=position)
        )
    audit.record(session, clock, actor, action="offer.choose", target=",".join(slugs))
