"""`course staff ...`: accounts, their sign-in links and API tokens, from the command line (an
operator with shell access, so every action here is recorded as "cli" in the audit log)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from course.cli.table import print_table
from course.clock import SystemClock
from course.db import engine_for, session_scope
from course.settings import Settings
from course.staff import accounts, audit, sign_in
from course.staff.accounts import CLI


def sign_in_url(settings: Settings, secret: str) -> str:
    return f"{settings.base_url.rstrip('/')}/staff/sign-in/{secret}"


def cmd_staff_add(args: argparse.Namespace, settings: Settings) -> int:
    clock = SystemClock()
    with session_scope(engine_for(settings.database_url)) as session:
        member, created = accounts.add(
            session, clock, email=args.email, role=args.role, name=args.name or ""
        )
        audit.record(session, clock, CLI, action="staff.add", target=member.email, role=member.role)
    verb = "Added" if created else "Updated"
    print(f"{verb} {member.email} as {member.role}.")
    print("They sign in at /staff with their email address: a link is emailed to them.")
    return 0


def cmd_staff_list(args: argparse.Namespace, settings: Settings) -> int:
    with session_scope(engine_for(settings.database_url)) as session:
        rows = [
            [m.email, m.name, m.role, "turned off" if m.disabled_at else "active"]
            for m in accounts.everyone(session)
        ]
    if not rows:
        print("No staff yet. Add one: course staff add EMAIL --role admin")
        return 0
    print_table(rows, ["email", "name", "role", "account"])
    return 0


def cmd_staff_link(args: argparse.Namespace, settings: Settings) -> int:
    """A sign-in link printed here rather than emailed: for a first admin, or when mail is
    not set up yet."""
    clock = SystemClock()
    with session_scope(engine_for(settings.database_url)) as session:
        issued = sign_in.request_link(session, clock, email=args.email)
        if issued is not None:
            audit.record(session, clock, CLI, action="staff.sign_in_link", target=args.email)
    if issued is None:
        print(f"No active staff account has the address {args.email}.", file=sys.stderr)
        return 1
    print(
        f"Sign-in link for {issued[0].email} (works once, for {sign_in.SIGN_IN_MINUTES} minutes):"
    )
    print(sign_in_url(settings, issued[1]))
    return 0


def cmd_token_create(args: argparse.Namespace, settings: Settings) -> int:
    clock = SystemClock()
    with session_scope(engine_for(settings.database_url)) as session:
        member = accounts.find(session, args.as_email)
        if member is None:
            print(f"No active staff account has the address {args.as_email}.", file=sys.stderr)
            return 1
        token, secret = sign_in.create_token(session, clock, staff=member, name=args.name)
        audit.record(session, clock, CLI, action="token.create", target=token.name)
    print(f"Token {token.name!r} (number {token.id}), acting as {member.email}. Shown only now:")
    print(secret)
    return 0


def cmd_token_list(args: argparse.Namespace, settings: Settings) -> int:
    with session_scope(engine_for(settings.database_url)) as session:
        rows = [
            [
                str(t.id),
                t.name,
                m.email,
                t.created_at.strftime("%Y-%m-%d"),
                "revoked" if t.revoked_at else "active",
            ]
            for t, m in sign_in.tokens(session)
        ]
    if not rows:
        print("No tokens.")
        return 0
    print_table(rows, ["number", "name", "acts as", "made", "state"])
    return 0


def cmd_token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    clock = SystemClock()
    with session_scope(engine_for(settings.database_url)) as session:
        token = sign_in.revoke_token(session, clock, token_id=args.number)
        if token is not None:
            audit.record(session, clock, CLI, action="token.revoke", target=token.name)
    if token is None:
        print(f"No token has the number {args.number}.", file=sys.stderr)
        return 1
    print(f"Revoked token {token.name!r}.")
    return 0


Command = Callable[[argparse.Namespace, Settings], int]


def add_parsers(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], checked: Callable[[Command], Command]
) -> None:
    """`course staff ...`; `checked` wraps each command so it checks the database first."""
    staff = sub.add_parser("staff", help="staff accounts, sign-in links and API tokens")
    ssub = staff.add_subparsers(dest="action", required=True)
    add = ssub.add_parser("add", help="add a staff member, or change their role")
    add.add_argument("email")
    add.add_argument("--role", required=True, choices=accounts.ROLES)
    add.add_argument("--name", default="")
    add.set_defaults(func=checked(cmd_staff_add))
    ssub.add_parser("list", help="everyone with an account").set_defaults(
        func=checked(cmd_staff_list)
    )
    link = ssub.add_parser("sign-in-link", help="print a one-time sign-in link (not emailed)")
    link.add_argument("email")
    link.set_defaults(func=checked(cmd_staff_link))
    token = ssub.add_parser("token", help="API tokens for the staff API")
    tsub = token.add_subparsers(dest="token_action", required=True)
    create = tsub.add_parser("create", help="make a token (shown once)")
    create.add_argument("name")
    create.add_argument("--as", dest="as_email", required=True, metavar="EMAIL")
    create.set_defaults(func=checked(cmd_token_create))
    tsub.add_parser("list", help="every token").set_defaults(func=checked(cmd_token_list))
    revoke = tsub.add_parser("revoke", help="revoke a token by its number")
    revoke.add_argument("number", type=int)
    revoke.set_defaults(func=checked(cmd_token_revoke))
