"""Log lines: JSON a log system can parse, text for a terminal, and never a reader's address or
answers, whoever logs them and however."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import textwrap
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import IntegrityError

from course import logs
from course.settings import PROJECT_ROOT

ADDRESS = "jane.doe+course@example.org"


@contextmanager
def captured(*, json_lines: bool):
    """The root logger configured by course.logs, writing to a buffer; restored afterwards."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    logs.configure(json=json_lines, level=logging.DEBUG)
    (handler,) = root.handlers
    buffer = io.StringIO()
    handler.setStream(buffer)  # type: ignore[attr-defined]
    try:
        yield buffer
    finally:
        root.handlers, root.level = saved[0], saved[1]


def lines(buffer: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_a_json_line_has_time_level_logger_message_and_extras():
    with captured(json_lines=True) as out:
        logging.getLogger("course.sending.batch").warning(
            "relay slow: %d deliveries left", 12, extra={"delivery_id": 7, "kind": "lesson"}
        )
    (line,) = lines(out)
    assert line["level"] == "WARNING"
    assert line["logger"] == "course.sending.batch"
    assert line["message"] == "relay slow: 12 deliveries left"
    assert line["delivery_id"] == 7 and line["kind"] == "lesson"
    assert line["time"].endswith("+00:00") and line["time"][:4].isdigit()


def test_an_address_never_reaches_a_line_however_it_is_logged():
    with captured(json_lines=True) as out:
        log = logging.getLogger("course.anything")
        log.info("as an argument: %s", ADDRESS)
        log.info(f"written into the text: {ADDRESS}")
        log.info("in an extra", extra={"reply": f"550 5.1.1 <{ADDRESS}>: no such user"})
        log.info(
            "personal fields",
            extra={
                "email": "not even an address",
                "first_name": "Jane",
                "answers": {"relationship": "parent", "substance": "opioids"},
                "fields": {"email": ADDRESS, "first_name": "Jane"},
                "recipients": [ADDRESS, "bob@example.net"],
                "staff_email": "x",
            },
        )
        try:
            raise ValueError(f"rejected {ADDRESS}")
        except ValueError:
            log.exception("failed")
        # (A stack shows source lines, so the note is not written on the logging line.)
        note = {"note": "she said her son..."}
        log.info("stack", stack_info=True, extra=note)
    written = out.getvalue()
    assert "example.org" not in written and "example.net" not in written
    assert "Jane" not in written and "opioids" not in written and "her son" not in written
    first, second, third, fourth, fifth, _ = lines(out)
    assert first["message"] == "as an argument: [email]"
    assert second["message"] == "written into the text: [email]"
    assert third["reply"] == "550 5.1.1 <[email]>: no such user"
    assert fourth["email"] == fourth["first_name"] == fourth["answers"] == "[redacted]"
    assert fourth["fields"] == "[redacted]" and fourth["staff_email"] == "[redacted]"
    assert fourth["recipients"] == "[redacted]"
    assert "ValueError: rejected [email]" in fifth["exc_info"]


def test_an_sql_error_quoting_an_address_is_scrubbed():
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE subscriber (email TEXT UNIQUE)"))
        conn.execute(text("INSERT INTO subscriber VALUES (:e)"), {"e": ADDRESS})
    with captured(json_lines=True) as out, pytest.raises(IntegrityError), engine.begin() as conn:
        try:
            conn.execute(text("INSERT INTO subscriber VALUES (:e)"), {"e": ADDRESS})
        except IntegrityError:
            logging.getLogger("course.readers").exception("sign-up failed")
            raise
    (line,) = lines(out)
    assert "IntegrityError" in line["exc_info"] and "[email]" in line["exc_info"]
    assert "example.org" not in out.getvalue()


def test_text_lines_for_a_terminal_are_scrubbed_too():
    with captured(json_lines=False) as out:
        logging.getLogger("course.dev").info("caught an email to %s: %s", ADDRESS, "Welcome")
    (line,) = out.getvalue().splitlines()
    assert line.endswith("INFO course.dev caught an email to [email]: Welcome")


def test_the_format_is_json_unless_a_person_is_reading_the_terminal():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert logs.wants_json("json", Terminal()) is True
    assert logs.wants_json("text", io.StringIO()) is False
    assert logs.wants_json(None, Terminal()) is False
    assert logs.wants_json(None, io.StringIO()) is True


def test_uvicorn_lines_go_through_the_same_filter():
    probe = textwrap.dedent(
        f"""
        import logging, uvicorn
        from course import logs
        logs.configure(json=True)
        logging.getLogger("uvicorn.access").info(
            '%s - "%s %s HTTP/%s" %d', "10.0.0.1", "GET", "/staff/readers?q={ADDRESS}", "1.1", 200
        )
        logging.getLogger("uvicorn.error").warning("oops {ADDRESS}")
        logging.getLogger("uvicorn.access").info("GET /x?email=jane%40example.org&a=1")
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60
    )
    assert done.returncode == 0, done.stderr
    access, error, encoded = (json.loads(line) for line in done.stderr.splitlines())
    assert access["message"] == '10.0.0.1 - "GET /staff/readers?q=[email] HTTP/1.1" 200'
    assert access["logger"] == "uvicorn.access"
    assert error["message"] == "oops [email]"
    assert encoded["message"] == "GET /x?email=[email]&a=1"


COMMAND = textwrap.dedent(
    """
    import logging, sys
    from course import cli
    from course.cli import lessons

    def check(args, settings):
        logging.getLogger("course.cli").info("one-off commands keep their output to prints")
        logging.getLogger("course.cli").warning("could not reach %s", sys.argv[1])
        return 0

    lessons.cmd_lessons_check = check
    sys.exit(cli.main(["lessons", "check", "somewhere"]))
    """
)


@pytest.mark.parametrize(("log_format", "json_lines"), [("json", True), ("text", False)])
def test_the_course_command_sets_up_its_log_lines(log_format, json_lines):
    done = subprocess.run(
        [sys.executable, "-c", COMMAND, ADDRESS],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=60,
        env={**os.environ, "COURSE_LOG_FORMAT": log_format},
    )
    assert done.returncode == 0, done.stderr
    (line,) = done.stderr.splitlines()
    if json_lines:
        parsed = json.loads(line)
        assert parsed["message"] == "could not reach [email]"
        assert parsed["level"] == "WARNING" and parsed["logger"] == "course.cli"
    else:
        assert line.endswith("WARNING course.cli could not reach [email]")
