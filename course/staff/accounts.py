"""Staff members, their roles, and who is acting: every staff action names an Actor."""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, col, select

from course.clock import Clock
from course.errors import CourseError, InvalidInput
from course.models import StaffMember, StaffRole, row_id

ROLES = tuple(role.value for role in StaffRole)


class NotPermitted(CourseError):
    """A staff member tried what their role does not allow (or a rule forbids, such as signing
    off their own draft). Carries a sentence they understand."""

    default_code = "not_permitted"


@dataclass(frozen=True)
class Actor:
    """Who is acting: a signed-in staff member, a staff member's API token, or the command line
    (which an operator with shell access runs, with every right)."""

    staff_id: int | None
    email: str
    role: str
    via: str = "session"  # "session", "token:<name>" or "cli"

    @property
    def label(self) -> str:
        if self.via == "cli":
            return "cli"
        if self.via.startswith("token:"):
            return f"{self.via} ({self.email})"
        return f"staff:{self.email}"

    def may_review(self) -> bool:
        return self.role in (StaffRole.REVIEWER, StaffRole.ADMIN)

    def may_administer(self) -> bool:
        return self.role == StaffRole.ADMIN

    def require_review(self) -> None:
        if not self.may_review():
            raise NotPermitted("Only a reviewer or an admin can do this: ask one of them.")

    def require_admin(self) -> None:
        if not self.may_administer():
            raise NotPermitted("Only an admin can do this.")


CLI = Actor(staff_id=None, email="", role=StaffRole.ADMIN, via="cli")


def actor_for(member: StaffMember, via: str = "session") -> Actor:
    return Actor(staff_id=row_id(member), email=member.email, role=member.role, via=via)


def normal_email(raw: str) -> str:
    try:
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise InvalidInput(
            f"That email address does not look right: {exc}", "email_invalid", "email"
        ) from exc


def find(session: Session, email: str) -> StaffMember | None:
    """The active staff member with this address, if any."""
    return session.exec(
        select(StaffMember).where(
            col(StaffMember.email) == email.strip().lower(), col(StaffMember.disabled_at).is_(None)
        )
    ).first()


def add(
    session: Session, clock: Clock, *, email: str, role: str, name: str = ""
) -> tuple[StaffMember, bool]:
    """Create the account, or change the role (and name) of an existing one; (member, created)."""
    if role not in ROLES:
        raise InvalidInput(f"A role is one of {', '.join(ROLES)}, not {role!r}.", "role", "role")
    address = normal_email(email)
    member = session.exec(select(StaffMember).where(col(StaffMember.email) == address)).first()
    created = member is None
    if member is None:
        member = StaffMember(email=address, created_at=clock.now())
    member.role, member.disabled_at = role, None
    member.name = name.strip()[:80] or member.name
    session.add(member)
    session.flush()
    return member, created


def everyone(session: Session) -> list[StaffMember]:
    return list(session.exec(select(StaffMember).order_by(col(StaffMember.email))).all())


def disable(session: Session, clock: Clock, *, staff_id: int) -> None:
    member = session.get(StaffMember, staff_id)
    if member is not None:
        member.disabled_at = clock.now()
        session.add(member)
