"""The Redis transport the workers use: kombu's, with one failure made an ordinary one.

When Redis goes away while a task runs (acks_late), kombu closes the channel; afterwards the
task's acknowledgement, or the put-back of its message, asks the closed channel for connection
parameters and gets an AttributeError ('NoneType' object has no attribute 'hostname' or
'client'), which no caller expects: it ended the whole worker, so a Redis restart stopped every
worker until someone started it again. Here a closed channel says so as a connection error,
which kombu and Celery already handle (they log it and reconnect). Nothing is lost by giving up
that acknowledgement or put-back: every message stands for a delivery row in the database whose
lease brings it back, the rule of this design, and Redis may have come back empty anyway.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions
from kombu.transport import redis as kombu_redis


class _Channel(kombu_redis.Channel):
    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise redis.exceptions.ConnectionError("the broker channel closed when Redis went away")
        return super()._connparams(asynchronous)  # type: ignore[misc]


class Transport(kombu_redis.Transport):
    Channel = _Channel
