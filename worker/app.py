"""The Celery app, configured from course.settings, with the beat schedule."""

from __future__ import annotations

import sys

from celery import Celery, signals

from course.errors import ConfigurationError
from course.settings import get_settings

settings = get_settings()

app = Celery("homeward", include=["worker.tasks"])
app.conf.update(
    broker_url=settings.redis_url or "redis://127.0.0.1:6379/0",
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    # Work is acknowledged after it ran; the database lease, not the broker, brings back work
    # from a killed worker (acks_late alone does not).
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": 3600},
    worker_hijack_root_logger=False,
    beat_schedule={
        "dispatch-due-lessons": {
            "task": "homeward.tick",
            "schedule": settings.tick_seconds,
            # A backlog of ticks is useless: each one does all the work that is due.
            "options": {"expires": max(settings.tick_seconds * 0.9, 1.0)},
        }
    },
)


@signals.worker_init.connect
@signals.beat_init.connect
def _refuse_unsafe_start(**_: object) -> None:
    # Emails carry signed links and must carry a postal address: outside `course dev`, refuse to
    # run on the development key or without an address, rather than send such mail.
    if not settings.dev:
        try:
            settings.require_production_ready()
        except ConfigurationError as exc:
            # Celery logs and ignores exceptions from signal handlers; this must stop the process.
            sys.stderr.write(f"homeward: cannot start: {exc.message}\n")
            raise SystemExit(2) from exc
