"""A worker process's SMTP connections: one kept-open connection per sending thread.

A worker runs COURSE_SMTP_CONNECTIONS threads (Celery's threads pool), each sending one batch at
a time over its own connection, so the process has that many messages in flight at once: across
the internet a message waits tens of milliseconds per round trip, and one connection at a time
left the relay idle 95% of the time. Each connection keeps the exactly-once rule of
course.sending.batch on its own, so a killed worker leaves at most one unrecorded message per
open connection.
"""

from __future__ import annotations

import threading

from course.sending.mailer import Mailer
from course.sending.relay import RelayGuard
from course.smtp import SmtpTarget


class ConnectionPool:
    def __init__(self, target: SmtpTarget, *, guard: RelayGuard | None = None) -> None:
        self._target, self._guard = target, guard
        self._local = threading.local()
        self._lock = threading.Lock()
        self._all: list[Mailer] = []

    def mailer(self) -> Mailer:
        """This thread's connection (opened on first use)."""
        found: Mailer | None = getattr(self._local, "mailer", None)
        if found is None:
            found = self._local.mailer = Mailer(self._target, guard=self._guard)
            with self._lock:
                self._all.append(found)
        return found

    @property
    def guard(self) -> RelayGuard | None:
        return self._guard

    def close(self) -> None:
        """Close every connection (the worker is stopping: no thread is sending)."""
        with self._lock:
            mailers, self._all = self._all, []
        for mailer in mailers:
            mailer.close()
        self._local = threading.local()
