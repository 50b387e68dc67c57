"""Signing in without passwords: a one-time link by email opens a session; API tokens for
scripts. Only hashes of the secrets are stored: a copy of the database opens nothing.

A sign-in link works once, for SIGN_IN_MINUTES. Its page asks for one press before it signs in,
so a mail scanner that opens links does not spend it. A session lasts SESSION_HOURS, or until
sign-out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from sqlalchemy import update
from sqlmodel import Session, col, select

from course.clock import Clock, as_utc
from course.models import ApiToken, StaffMember, StaffSession, StaffSignIn, row_id
from course.staff.accounts import Actor, actor_for, find

SIGN_IN_MINUTES = 20
SESSION_HOURS = 12


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def request_link(session: Session, clock: Clock, *, email: str) -> tuple[StaffMember, str] | None:
    """A new one-time sign-in secret for an active staff member; None for anyone else (the
    caller answers the same either way)."""
    member = find(session, email)
    if member is None:
        return None
    secret = secrets.token_urlsafe(32)
    now = clock.now()
    session.add(
        StaffSignIn(
            staff_id=row_id(member),
            secret_hash=_hash(secret),
            created_at=now,
            expires_at=now + timedelta(minutes=SIGN_IN_MINUTES),
        )
    )
    return member, secret


def link_is_usable(session: Session, clock: Clock, secret: str) -> bool:
    found = session.exec(
        select(StaffSignIn).where(col(StaffSignIn.secret_hash) == _hash(secret))
    ).first()
    return found is not None and found.used_at is None and as_utc(found.expires_at) > clock.now()


def redeem(session: Session, clock: Clock, secret: str) -> tuple[Actor, str] | None:
    """Spend a sign-in link (once: a second use, or a late one, gets None) and open a session;
    returns who signed in and the session's secret, for the cookie."""
    now = clock.now()
    spent = session.execute(
        update(StaffSignIn)
        .where(
            col(StaffSignIn.secret_hash) == _hash(secret),
            col(StaffSignIn.used_at).is_(None),
            col(StaffSignIn.expires_at) > now,
        )
        .values(used_at=now)
        .returning(col(StaffSignIn.staff_id))
    ).first()
    if spent is None:
        return None
    member = session.get(StaffMember, spent[0])
    if member is None or member.disabled_at is not None:
        return None
    cookie = secrets.token_urlsafe(32)
    session.add(
        StaffSession(
            staff_id=row_id(member),
            secret_hash=_hash(cookie),
            created_at=now,
            expires_at=now + timedelta(hours=SESSION_HOURS),
        )
    )
    return actor_for(member), cookie


def session_actor(session: Session, clock: Clock, cookie: str) -> Actor | None:
    """Who a session cookie belongs to, while the session lasts and the account is active."""
    row = session.exec(
        select(StaffSession, StaffMember)
        .join(StaffMember, col(StaffMember.id) == col(StaffSession.staff_id))
        .where(col(StaffSession.secret_hash) == _hash(cookie))
    ).first()
    if row is None:
        return None
    found, member = row
    if found.ended_at is not None or as_utc(found.expires_at) <= clock.now():
        return None
    if member.disabled_at is not None:
        return None
    return actor_for(member)


def sign_out(session: Session, clock: Clock, cookie: str) -> None:
    session.execute(
        update(StaffSession)
        .where(col(StaffSession.secret_hash) == _hash(cookie), col(StaffSession.ended_at).is_(None))
        .values(ended_at=clock.now())
    )


def csrf_token(secret_key: str, cookie: str) -> str:
    """The token every form of a signed-in page carries: tied to the session, so a page on
    another site cannot make one."""
    return hmac.new(secret_key.encode(), b"csrf:" + cookie.encode(), hashlib.sha256).hexdigest()


def csrf_ok(secret_key: str, cookie: str, sent: str) -> bool:
    return hmac.compare_digest(csrf_token(secret_key, cookie), sent)


# --- API tokens -------------------------------------------------------------------------------

TOKEN_PREFIX = "hw_"


def create_token(
    session: Session, clock: Clock, *, staff: StaffMember, name: str
) -> tuple[ApiToken, str]:
    """A new API token acting as `staff`; the secret is shown once and never stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken(
        name=name.strip()[:80] or "token",
        staff_id=row_id(staff),
        secret_hash=_hash(secret),
        created_at=clock.now(),
    )
    session.add(token)
    session.flush()
    return token, secret


def token_actor(session: Session, clock: Clock, secret: str) -> Actor | None:
    row = session.exec(
        select(ApiToken, StaffMember)
        .join(StaffMember, col(StaffMember.id) == col(ApiToken.staff_id))
        .where(col(ApiToken.secret_hash) == _hash(secret))
    ).first()
    if row is None:
        return None
    token, member = row
    if token.revoked_at is not None or member.disabled_at is not None:
        return None
    token.last_used_at = clock.now()
    session.add(token)
    return actor_for(member, via=f"token:{token.name}")


def tokens(session: Session) -> list[tuple[ApiToken, StaffMember]]:
    rows = session.exec(
        select(ApiToken, StaffMember)
        .join(StaffMember, col(StaffMember.id) == col(ApiToken.staff_id))
        .order_by(col(ApiToken.id))
    ).all()
    return [(t, m) for t, m in rows]


def revoke_token(session: Session, clock: Clock, *, token_id: int) -> ApiToken | None:
    token = session.get(ApiToken, token_id)
    if token is not None and token.revoked_at is None:
        token.revoked_at = clock.now()
        session.add(token)
    return token
