"""The one seam between the application and Celery: hand ids to the workers, after commit.

If the broker cannot be reached the work is not lost: the rows are in the database, and the
next beat tick hands them out when their lease runs out.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)

SEND_TASK = "homeward.send"
TICK_TASK = "homeward.tick"


def enqueue_sends(batches: list[list[int]]) -> None:
    from worker.app import app

    try:
        with app.producer_or_acquire() as producer:
            for batch in batches:
                if batch:
                    app.send_task(SEND_TASK, args=[batch], producer=producer)
    except Exception:  # the database lease brings these back; a web request must not fail
        log.warning(
            "could not enqueue %d batches; the next tick will retry", len(batches), exc_info=True
        )


def kick_tick() -> None:
    """Run a tick now, so a just-confirmed reader gets lesson 1 at once, not at the next beat."""
    from worker.app import app

    try:
        app.send_task(TICK_TASK)
    except Exception:
        log.warning("could not enqueue a tick; beat will run one shortly", exc_info=True)
