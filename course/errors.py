"""Domain errors. The web layer maps each to a clear 4xx answer in one place."""


class CourseError(Exception):
    """Base of every error a person can be told about."""

    status_code = 400
    # A stable name for the message, so the web pages can say it in the reader's language.
    default_code = ""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.default_code


class InvalidInput(CourseError):
    status_code = 422

    def __init__(self, message: str, code: str = "", field: str = "") -> None:
        super().__init__(message, code)
        # The form field to point the reader at, when one is to blame.
        self.field = field


class UnknownSequence(CourseError):
    status_code = 404
    default_code = "unknown_course"


class TokenInvalid(CourseError):
    status_code = 400
    default_code = "link_invalid"


class TokenExpired(TokenInvalid):
    status_code = 410
    default_code = "link_expired"


class LinkEnded(TokenInvalid):
    """A genuine link whose enrollment is gone (erased, or a database restored without it)."""

    status_code = 410
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
    status_code = 500
