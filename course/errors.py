"""Domain errors: every error a person can be told about, with a stable code so each page can
say it in the reader's language. They know nothing of HTTP: course.web.errors maps each to a
status, in one place, and the CLI prints the message.

    CourseError
    ├── InvalidInput          what someone typed or sent cannot be used (says which field)
    ├── UnknownSequence       no course by that name
    ├── TokenInvalid          a link that is not ours, or was cut off
    │   ├── TokenExpired      a link past its time (confirmation, data)
    │   └── LinkEnded         a genuine link whose reader is gone: it changes nothing
    ├── LessonInvalid         a sequence that cannot be published, with every problem found
    └── ConfigurationError    the service cannot run as configured
"""

from __future__ import annotations


class CourseError(Exception):
    """Base of every error a person can be told about."""

    # A stable name for the message, so the web pages can say it in the reader's language.
    default_code = ""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class InvalidInput(CourseError):
    def __init__(self, message: str, code: str = "", field: str = "") -> None:
        super().__init__(message, code)
        # The form field to point the reader at, when one is to blame.
        self.field = field


class UnknownSequence(CourseError):
    default_code = "unknown_course"


class TokenInvalid(CourseError):
    default_code = "link_invalid"


class TokenExpired(TokenInvalid):
    default_code = "link_expired"


class LinkEnded(TokenInvalid):
    """A genuine link whose enrollment is gone (erased, or a database restored without it)."""

    default_code = "link_ended"

    def __init__(self) -> None:
        super().__init__(
            "This link has ended, and nothing was changed. If you would like the lessons, you "
            "can sign up again on our home page."
        )


class LessonInvalid(CourseError):
    """A lesson or sequence folder that cannot be published; carries every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ConfigurationError(CourseError):
    pass
