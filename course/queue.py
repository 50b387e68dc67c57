"""The one seam between the application and Celery: the Celery app the web app and the workers
share (configured from course.settings), and handing ids to the workers, after commit.

If the broker cannot be reached the work is not lost: the rows are in the database, and the next
beat tick hands them out when their lease runs out. The worker side (tasks, beat schedule) lives
in `worker/`, which builds on this app; nothing here imports it.
"""

from __future__ import annotations

import logging

from celery import Celery

from course.settings import get_settings

log = logging.getLogger(__name__)

SEND_TASK = "homeward.send"
TICK_TASK = "homeward.tick"
PURGE_TASK = "homeward.purge"
WEBHOOKS_TASK = "homeward.webhooks"


def broker_url() -> str:
    return get_settings().redis_url or "redis://127.0.0.1:6379/0"


app = Celery("homeward")
app.conf.update(
    broker_url=broker_url(),
    broker_connection_retry_on_startup=True,
    # kombu's Redis transport, minus a crash when Redis restarts mid-task (course.broker).
    broker_transport="course.broker:Transport",
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
)


def enqueue_sends(batches: list[list[int]]) -> None:
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
    try:
        app.send_task(TICK_TASK)
    except Exception:
        log.warning("could not enqueue a tick; beat will run one shortly", exc_info=True)
