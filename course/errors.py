"""Domain errors. The web layer maps each to a clear 4xx answer in one place."""


class CourseError(Exception):
    """Base of every error a person can be told about."""

    status_code = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(CourseError):
    status_code = 422


class UnknownSequence(CourseError):
    status_code = 404


class TokenInvalid(CourseError):
    status_code = 400


class TokenExpired(TokenInvalid):
    status_code = 410


class LessonInvalid(CourseError):
    """A lesson or sequence folder that cannot be published; carries every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class ConfigurationError(CourseError):
    status_code = 500
