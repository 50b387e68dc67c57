"""`course subscriber export|erase EMAIL`: answering a person's request for their data."""

from __future__ import annotations

import argparse
import json
import sys

from course.settings import Settings


def cmd_subscriber(args: argparse.Namespace, settings: Settings) -> int:
    from course.db import engine_for, session_scope
    from course.readers.personal_data import erase, export

    with session_scope(engine_for(settings.database_url)) as session:
        if args.action == "export":
            data = export(session, args.email)
            if data is None:
                print(f"No data is stored for {args.email}.", file=sys.stderr)
                return 1
            print(json.dumps(data, indent=2, ensure_ascii=False))
            return 0
        if erase(session, args.email):
            print(f"Erased everything stored for {args.email}.")
        else:
            print(f"No data is stored for {args.email}.")
    return 0
