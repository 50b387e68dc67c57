"""`course bounces read --maildir PATH`: read a bounce mailbox (the Return-Path of our mail),
take every bounce and complaint in it down the suppression path, and mark each message read."""

from __future__ import annotations

import argparse
import mailbox
import sys
from pathlib import Path

from tqdm import tqdm

from course.bounces import reports_in
from course.cli.table import print_table
from course.clock import SystemClock
from course.db import engine_for, session_scope
from course.settings import Settings
from course.suppression import report


def cmd_bounces(args: argparse.Namespace, settings: Settings) -> int:
    folder = Path(args.maildir)
    if not (folder / "new").is_dir() or not (folder / "cur").is_dir():
        print(f"{folder}: not a Maildir (it needs new/ and cur/ folders).", file=sys.stderr)
        return 1
    box = mailbox.Maildir(str(folder), factory=None, create=False)
    keys = [key for key, message in box.iteritems() if message.get_subdir() == "new"]
    engine = engine_for(settings.database_url)
    counts = {"messages": 0, "reports": 0, "suppressed": 0, "not bounces": 0}
    for key in tqdm(keys, desc="bounce messages", unit="msg", disable=not keys or args.quiet):
        message = box[key]
        found = reports_in(message.as_bytes())
        with session_scope(engine) as session:
            for address, kind, why in found:
                counts["suppressed"] += report(
                    session,
                    email=address,
                    kind=kind,
                    reason=why,
                    now=SystemClock().now(),
                    soft_limit=settings.soft_bounce_limit,
                )
        counts["messages"] += 1
        counts["reports"] += len(found)
        counts["not bounces"] += not found
        message.set_subdir("cur")
        message.add_flag("S")  # read: the next run passes over it
        box[key] = message
    print_table([[name, str(n)] for name, n in counts.items()], ["in the mailbox", "count"])
    return 0
