"""The Celery worker and beat: the shared app from course.queue, with what only workers need
(acknowledgement, prefetch, the beat schedule, the refusal to start unconfigured)."""

from __future__ import annotations

import logging
import sys

from celery import signals

from course import logs, metrics
from course.errors import ConfigurationError
from course.queue import PURGE_TASK, TICK_TASK, WEBHOOKS_TASK, app
from course.settings import get_settings

__all__ = ["app"]

settings = get_settings()

app.conf.update(
    include=["worker.tasks"],
    # Work is acknowledged after it ran; the database lease, not the broker, brings back work
    # from a killed worker (acks_late alone does not).
    task_acks_late=True,
    worker_prefetch_multiplier=1,
    # One sending thread per SMTP connection (course.sending.connections): sending is waiting on
    # the network, which threads share well; a process per connection cost ~100 MB each.
    # Run one worker process per core for more CPU (`--concurrency` overrides the count).
    worker_pool="threads",
    worker_concurrency=settings.smtp_connections,
    broker_transport_options={"visibility_timeout": 3600},
    worker_hijack_root_logger=False,
    beat_schedule={
        "dispatch-due-lessons": {
            "task": TICK_TASK,
            "schedule": settings.tick_seconds,
            # A backlog of ticks is useless: each one does all the work that is due.
            "options": {"expires": max(settings.tick_seconds * 0.9, 1.0)},
        },
        "post-webhooks": {
            "task": WEBHOOKS_TASK,
            "schedule": 5.0,
            "options": {"expires": 4.0},
        },
        "purge-unconfirmed-sign-ups": {
            "task": PURGE_TASK,
            "schedule": 3600.0,
            "options": {"expires": 3000.0},
        },
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


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _logs(logger: logging.Logger, **_: object) -> None:
    # Celery's handlers (its --logfile included), each made to drop a reader's address or
    # answers from every line, whatever a message or a library puts in them; as JSON off a
    # terminal, for a log system to parse.
    as_json = logs.wants_json(settings.log_format)
    for handler in logger.handlers:
        handler.addFilter(logs.RedactPersonalData())
        if as_json:
            handler.setFormatter(logs.json_formatter())


@signals.worker_init.connect
def _metrics(**_: object) -> None:
    metrics.serve_worker_metrics(settings.worker_metrics_port, settings.worker_metrics_host)
