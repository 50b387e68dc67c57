"""course dev's signal handler: where a signal ends it at once, and where it only takes note.

tests/test_dev.py stops the real course dev; these pin down each case, including the ones that
the real run meets only by chance of timing (a signal inside a request, or inside Popen).
"""

from __future__ import annotations

import signal

import pytest
import uvicorn

from course.cli.shutdown import Shutdown


async def _app(scope: object, receive: object, send: object) -> None:
    raise AssertionError("never served")


def test_a_signal_before_anything_runs_exits_at_once():
    with pytest.raises(SystemExit) as ended:
        Shutdown()(signal.SIGTERM, None)
    assert ended.value.code == 128 + signal.SIGTERM


def test_a_signal_while_a_child_starts_exits_once_the_child_is_in_hand():
    shutdown = Shutdown()
    in_hand = []
    with pytest.raises(SystemExit) as ended, shutdown.starting():
        shutdown(signal.SIGHUP, None)
        in_hand.append("the child's Popen")
    assert in_hand == ["the child's Popen"]
    assert ended.value.code == 128 + signal.SIGHUP


def test_a_signal_while_the_web_app_runs_asks_it_to_stop_instead_of_raising():
    # Raised there, it would land in a request, where uvicorn logs and swallows it.
    shutdown = Shutdown()
    shutdown.server = uvicorn.Server(uvicorn.Config(_app))
    shutdown(signal.SIGHUP, None)
    assert shutdown.server.should_exit
    with pytest.raises(SystemExit) as ended:
        shutdown.exit_if_signalled()
    assert ended.value.code == 128 + signal.SIGHUP


def test_a_second_signal_does_not_cut_the_cleanup_short():
    shutdown = Shutdown()
    shutdown.cleaning_up()
    shutdown(signal.SIGINT, None)
    shutdown(signal.SIGINT, None)
    assert shutdown.signum == signal.SIGINT


def test_without_a_signal_nothing_ends():
    shutdown = Shutdown()
    with shutdown.starting():
        pass
    shutdown.exit_if_signalled()
