"""`course dev`, the quick start's first command, run and stopped as a newcomer would."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import httpx
import pytest

from course.cli.embedded_redis import free_port
from course.settings import PROJECT_ROOT
from tests.support import wait_for

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/stat").exists(),
    reason="finds the processes course dev started through /proc, which only Linux has",
)

COURSE_DEV = [sys.executable, "-m", "course.cli", "dev"]
QUICK_START = [sys.executable, "run.py", "dev"]
# The private redis-server, Celery beat, and the Celery worker (its sending threads are threads).
STARTED = 3


def in_session(session: int) -> list[int]:
    """The live processes of a session: course dev runs in one of its own, and what it starts
    stays in it, even once orphaned."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        if int(fields[3]) == session and fields[0] != "Z":
            found.append(int(stat.parent.name))
    return found


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def keep_asking(port: int, answered: threading.Event) -> None:
    while healthy(port):
        answered.set()


def quick_start_is_installed() -> bool:
    """Asked of run.py itself: if not, it would first create or update .venv (minutes, and the
    package index), which is not what this test is about."""
    spec = importlib.util.spec_from_file_location("quick_start", PROJECT_ROOT / "run.py")
    assert spec and spec.loader
    quick_start = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quick_start)
    return bool(quick_start.installed())


def start(command: list[str], tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
    env["COURSE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'dev.db'}"
    env["COURSE_DEV_MAILBOX"] = str(tmp_path / "mailbox")
    return subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def assert_ends_with_everything(dev: subprocess.Popen[bytes], sig: int, port: int) -> None:
    assert dev.wait(60) == 128 + sig
    wait_for(
        lambda: not in_session(dev.pid),
        30,
        "every process course dev started to stop",
    )
    assert not healthy(port)


def kill_what_is_left(dev: subprocess.Popen[bytes]) -> None:
    for pid in in_session(dev.pid):
        with contextlib.suppress(ProcessLookupError):  # it ended since
            os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize(
    ("command", "sig"),
    [
        (COURSE_DEV, signal.SIGTERM),
        (COURSE_DEV, signal.SIGHUP),
        (COURSE_DEV, signal.SIGINT),
        # What a newcomer kills is the quick start's own process.
        (QUICK_START, signal.SIGTERM),
    ],
    ids=["kill", "terminal-closed", "interrupt", "kill-quick-start"],
)
def test_stopping_course_dev_stops_everything_it_started(
    tmp_path: Path, command: list[str], sig: signal.Signals
):
    if command is QUICK_START and not quick_start_is_installed():
        pytest.skip(
            "the quick start's .venv is missing or older than pyproject.toml, and run.py would"
            " first install it; `python3 run.py test` installs it and runs this case"
        )
    port = free_port()
    dev = start(command, tmp_path, port)
    try:
        wait_for(lambda: healthy(port), 90, "course dev to answer /health")
        wait_for(lambda: len(in_session(dev.pid)) > STARTED, 30, "all it starts to be running")
        # A page loading as the terminal closes: a signal handled inside a request used to be
        # swallowed there, and course dev never stopped.
        answered = threading.Event()
        threading.Thread(target=keep_asking, args=(port, answered), daemon=True).start()
        assert answered.wait(30)
        dev.send_signal(sig)
        assert_ends_with_everything(dev, sig, port)
    finally:
        kill_what_is_left(dev)


@pytest.mark.parametrize("first", [1, 2], ids=["redis-server", "celery-worker"])
def test_a_signal_while_course_dev_starts_a_process_stops_that_process_too(
    tmp_path: Path, first: int
):
    """Ended in the middle of starting a child, course dev used to exit without knowing it."""
    port = free_port()
    dev = start(COURSE_DEV, tmp_path, port)
    try:
        # The moment the child exists, before Popen has handed over its pid: read without a
        # pause, a file that lists just the children of course dev's main thread.
        children = Path(f"/proc/{dev.pid}/task/{dev.pid}/children")
        deadline = time.monotonic() + 90
        while len(children.read_text().split()) < first:
            assert time.monotonic() < deadline, f"course dev's child #{first} never started"
        dev.send_signal(signal.SIGTERM)
        assert_ends_with_everything(dev, signal.SIGTERM, port)
    finally:
        kill_what_is_left(dev)


def test_course_dev_prints_a_link_that_signs_its_admin_in(tmp_path: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
    env["COURSE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'dev.db'}"
    env["COURSE_DEV_MAILBOX"] = str(tmp_path / "mailbox")
    out = tmp_path / "out.txt"
    with out.open("wb") as sink:
        dev = subprocess.Popen(
            [*COURSE_DEV, "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: healthy(port), 90, "course dev to answer /health")
        found = re.search(r"Staff: +(http://\S+/staff/sign-in/\S+)", out.read_text())
        assert found, out.read_text()
        with httpx.Client(follow_redirects=False) as client:
            assert "Sign in" in client.get(found.group(1)).text
            signed = client.post(found.group(1))
            assert signed.status_code == 303 and signed.headers["location"] == "/staff"
            home = client.get(f"http://127.0.0.1:{port}/staff")
            assert home.status_code == 200 and "admin@example.org (admin)" in home.text
    finally:
        dev.send_signal(signal.SIGTERM)
        dev.wait(60)
        kill_what_is_left(dev)
