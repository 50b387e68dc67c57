"""How `course dev` ends on Ctrl+C, `kill` or a closed terminal: always through its cleanup.

`course dev` starts a redis-server, a Celery worker and Celery beat. Whichever of these signals
ends it, and whenever it comes, they must stop too: a newcomer who closes the terminal must not
leave a worker sending mail in the background.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import uvicorn


class Shutdown:
    """The handler of SIGINT, SIGTERM and SIGHUP for `course dev`.

    A signal raises SystemExit(128 + signal), so that the caller's `finally` stops what was
    started, except where raising would lose something; there it is only noted:
    - while a child process is being started (`starting()`): raised inside Popen, the child runs
      on with nobody holding its pid. The exit comes once it is in hand;
    - while the web app runs (`serve()`): raised inside a request, uvicorn logs and swallows it,
      and course dev never stopped. The server is asked to shut down, and the exit comes after;
    - during the cleanup (`cleaning_up()`), which a second Ctrl+C must not cut short.
    """

    def __init__(self) -> None:
        self.server: uvicorn.Server | None = None
        self.signum: int | None = None
        self._noting = 0

    def install(self) -> Shutdown:
        for name in ("SIGINT", "SIGTERM", "SIGHUP"):  # Windows has no SIGHUP
            if hasattr(signal, name):
                signal.signal(getattr(signal, name), self)
        return self

    def __call__(self, signum: int, _frame: object) -> None:
        if self.signum is None:
            self.signum = signum
        if self.server is not None:
            self.server.should_exit = True
        elif not self._noting:
            raise SystemExit(128 + signum)

    def exit_if_signalled(self) -> None:
        if self.signum is not None:
            raise SystemExit(128 + self.signum)

    @contextmanager
    def starting(self) -> Iterator[None]:
        """Around the start of a child process: a signal meanwhile ends course dev after it."""
        self._noting += 1
        try:
            yield
        finally:
            self._noting -= 1
        self.exit_if_signalled()

    def serve(self, server: uvicorn.Server) -> None:
        """Run the web app until it is told to stop; exit if a signal told it."""
        self.server = server
        server.run()
        self.exit_if_signalled()

    def cleaning_up(self) -> None:
        """From here on a signal is only noted: the cleanup runs to its end."""
        self._noting += 1
