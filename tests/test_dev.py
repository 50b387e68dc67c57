"""`course dev`, the quick start's first command, run and stopped as a newcomer would."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

from course.embedded_redis import free_port
from course.settings import PROJECT_ROOT
from tests.conftest import wait_for


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it ended while we looked
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as answer:
            return answer.status == 200
    except OSError:
        return False


def keep_asking(port: int, answered: threading.Event) -> None:
    while healthy(port):
        answered.set()


def descendants_of(pid: int) -> list[int]:
    found, parents = [], [pid]
    while parents:
        children = [child for parent in parents for child in children_of(parent)]
        found += children
        parents = children
    return found


def quick_start_is_installed() -> bool:
    """`run.py` would first create or update .venv, which this test must not wait for."""
    spec = importlib.util.spec_from_file_location("quick_start", PROJECT_ROOT / "run.py")
    assert spec and spec.loader
    quick_start = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quick_start)
    stamp = quick_start.STAMP
    wanted = hashlib.sha256((PROJECT_ROOT / "pyproject.toml").read_bytes()).hexdigest()
    return stamp.exists() and stamp.read_text() == wanted


COURSE_DEV = [sys.executable, "-m", "course.cli", "dev"]
QUICK_START = [sys.executable, "run.py", "dev"]


@pytest.mark.skipif(
    not Path("/proc/self/stat").exists(),
    reason="finds the processes course dev started through /proc, which only Linux has",
)
@pytest.mark.parametrize(
    ("command", "sig"),
    [
        (COURSE_DEV, signal.SIGTERM),
        (COURSE_DEV, signal.SIGHUP),
        # What a newcomer kills is the quick start's own process.
        (QUICK_START, signal.SIGTERM),
    ],
    ids=["kill", "terminal-closed", "kill-quick-start"],
)
def test_stopping_course_dev_stops_everything_it_started(
    tmp_path: Path, command: list[str], sig: signal.Signals
):
    if command is QUICK_START and not quick_start_is_installed():
        pytest.skip("run.py would first install .venv (run the suite with `python3 run.py test`)")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("COURSE_")}
    env["COURSE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'dev.db'}"
    env["COURSE_DEV_MAILBOX"] = str(tmp_path / "mailbox")
    dev = subprocess.Popen(
        [*command, "--port", str(port)],
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    started: list[int] = []
    try:
        wait_for(lambda: healthy(port), 90, "course dev to answer /health")
        # The private redis-server, the Celery worker and Celery beat.
        wait_for(lambda: len(descendants_of(dev.pid)) >= 3, 30, "its three processes")
        started = descendants_of(dev.pid)
        # A page loading as the terminal closes: a signal handled inside a request used to be
        # swallowed there, and course dev never stopped.
        answered = threading.Event()
        loading = threading.Thread(target=keep_asking, args=(port, answered), daemon=True)
        loading.start()
        answered.wait(30)
        dev.send_signal(sig)
        assert dev.wait(60) == 128 + sig
        wait_for(
            lambda: not any(running(pid) for pid in started),
            30,
            "the worker, beat and redis-server it started to stop",
        )
        assert not healthy(port)
    finally:
        for pid in [dev.pid, *started]:
            if running(pid):
                os.kill(pid, signal.SIGKILL)
