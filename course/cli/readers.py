"""`course subscriber export|erase EMAIL`: answering a person's request for their data."""

from __future__ import annotations

import argparse
import json
import sys

from course.settings import Settings


def cmd_subscriber(args: argparse.Namespace, settings: Settings) -> int:
    from course.db import engine_for, session_scope
    from course.readers.personal_data import erase_for_good, export

    engine = engine_for(settings.database_url)
    if args.action == "export":
        with session_scope(engine) as session:
            data = export(session, args.email)
        if data is None:
            print(f"No data is stored for {args.email}.", file=sys.stderr)
            return 1
        print(json.dumps(data, indent=2, ensure_ascii=False))
        return 0
    if erase_for_good(engine, args.email):
        print(f"Erased everything stored for {args.email}.")
    else:
        print(f"No data is stored for {args.email}.")
    return 0
