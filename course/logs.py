"""Log lines: JSON for a log system (time, level, logger, message and any extras) or text for a
person at a terminal, and never a reader's address or answers in either.

Redaction is a filter on the one handler every line goes through, so it holds for the code's own
lines, for libraries' (an SQL error quoting its parameters, an SMTP reply naming the recipient)
and for a caller that logs an address by mistake: addresses anywhere in a message, an extra or a
traceback become "[email]", and extras named as personal fields ("email", "first_name",
"answers", ...) become "[redacted]".
"""

from __future__ import annotations

import logging
import logging.config
import re
import sys
from collections.abc import Mapping
from typing import Any

from pythonjsonlogger.json import JsonFormatter

REDACTED = "[redacted]"
EMAIL_REDACTED = "[email]"
# Wider than a valid address in its domain (an IDN, a typo is still personal), narrower in its
# local part: "/", "?", "=" and "&" are left out so that a URL's path survives around an address
# in its query, which may be written "%40" for "@".
EMAIL = re.compile(r"[\w.!#$%'*+^`{|}~-]+(?:@|%40)[\w-]+(?:\.[\w-]+)+", re.UNICODE)
# Extras that hold what a reader told us (the sign-up form, preferences, a staff note) or who
# they are, whatever their value looks like.
PERSONAL_FIELDS = frozenset(
    {
        "email",
        "address",
        "to",
        "rcpt",
        "rcpt_tos",
        "recipient",
        "recipients",
        "first_name",
        "name",
        "subject",
        "fields",
        "answers",
        "relationship",
        "substance",
        "time_zone",
        "send_hour",
        "conversation_on",
        "treatment_on",
        "consent_note",
        "note",
        "comment",
    }
)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
_JSON_RENAMED = {"levelname": "level", "name": "logger"}
# What a LogRecord carries of its own; everything else on it came in as an extra.
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def scrub(value: Any) -> Any:
    """`value` with every address in it replaced, through lists and mappings."""
    if isinstance(value, str):
        return EMAIL.sub(EMAIL_REDACTED, value)
    if isinstance(value, Mapping):
        return {k: REDACTED if _personal(k) else scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [scrub(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    # Anything else is logged by its text: scrub that text, as it is what would be written.
    return scrub(str(value))


def _personal(key: object) -> bool:
    name = str(key).lower()
    return name in PERSONAL_FIELDS or name.endswith(("email", "_address"))


class RedactPersonalData(logging.Filter):
    """Removes addresses and personal fields from a record before any handler writes it."""

    def filter(self, record: logging.LogRecord) -> bool:
        # The message as it will read, arguments filled in, then scrubbed: an address passed as
        # an argument is caught as surely as one written into the text.
        try:
            message = record.getMessage()
        except Exception:  # a caller's bad format string: keep what there is to keep
            message = f"{record.msg} {record.args}"
        record.msg, record.args = EMAIL.sub(EMAIL_REDACTED, message), None
        # uvicorn's copy of the message with terminal colours: the line has it once already.
        record.__dict__.pop("color_message", None)
        for key in set(record.__dict__) - _RECORD_ATTRIBUTES:
            record.__dict__[key] = REDACTED if _personal(key) else scrub(record.__dict__[key])
        if record.exc_info:
            # Formatted here, scrubbed, and the original dropped: each formatter writes
            # exc_text when there is no exc_info (an SQL error's parameters, an SMTP reply).
            record.exc_text = logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
        if record.exc_text:
            record.exc_text = EMAIL.sub(EMAIL_REDACTED, record.exc_text)
        if record.stack_info:
            record.stack_info = EMAIL.sub(EMAIL_REDACTED, record.stack_info)
        return True


def json_formatter() -> JsonFormatter:
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields=_JSON_RENAMED,
        timestamp="time",  # ISO 8601 in UTC, whatever the host's zone
    )


def wants_json(log_format: str | None, stream: Any = None) -> bool:
    """COURSE_LOG_FORMAT: "json" or "text"; unset, text when a person is reading the terminal
    and JSON when the lines go to a file, a container's log or journald."""
    if log_format:
        return log_format.lower() == "json"
    isatty = getattr(stream if stream is not None else sys.stderr, "isatty", None)
    return not (callable(isatty) and isatty())


def dict_config(json: bool, level: int | str = logging.INFO) -> dict[str, Any]:
    """The logging setup as a dictConfig, for what takes one (uvicorn's `log_config`, which each
    of `--workers` processes applies for itself)."""
    formatter: dict[str, Any] = {"()": json_formatter} if json else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactPersonalData}},
        "formatters": {"homeward": formatter},
        "handlers": {
            "homeward": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "homeward",
                "filters": ["redact"],
            }
        },
        "root": {"handlers": ["homeward"], "level": level},
        # uvicorn's own loggers otherwise write through handlers of their own, past the filter.
        "loggers": {
            **{
                name: {"handlers": [], "propagate": True}
                for name in ("uvicorn", "uvicorn.error", "uvicorn.access")
            },
            # A line per migration plugin at every start says nothing an operator needs.
            "alembic.runtime.plugins": {"level": "WARNING"},
        },
    }


def configure(json: bool, level: int | str = logging.INFO) -> None:
    """Send every log line of this process to stderr through the redacting filter, as JSON or as
    text; replaces the root logger's handlers, so calling it again changes the setup."""
    logging.config.dictConfig(dict_config(json, level))
