"""The OpenAPI document says what each route really answers: every error it can give, with the
body it comes with (JSON for API clients, a page for browsers), and the request bodies that are
read by hand (course.web.deps), not by FastAPI. A schemathesis run in the tests holds the
document to the answers."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from course.render import PERSONA_VALUES


class ErrorBody(BaseModel):
    """Every error answer to an API client."""

    error: str  # a sentence a person understands
    code: str | None = None  # stable, for a client to act on (see course/web/locales)


_ERROR_SCHEMA = ErrorBody.model_json_schema()
_MEANING = {
    400: "The link is not one of ours or was cut off, or the body is not readable JSON",
    401: "Not signed (a webhook) or not signed in (staff: an API token is needed)",
    403: "Signed in, but this role may not do it (or a rule forbids it)",
    404: "No such course (or this provider's webhook is not set up)",
    410: "The link has expired, or its reader is gone: nothing was changed",
    413: "The request body is too large",
    415: "The body is neither a form nor JSON",
    422: "The input cannot be used: the message says which field and why",
    429: "Too many requests from this client or for this address: wait a few minutes",
    503: "Not open yet: nothing is published, or the database is not migrated",
}
# The answers of a route whose body is read (course.web.deps.FieldsDep / RawBodyDep).
BODY = (413, 415, 422)
# The answers of a route that a reader's signed link opens.
LINK = (400, 410)


def answers(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: each status with its meaning and both of its bodies."""
    return {
        status: {
            "description": _MEANING[status],
            "content": {
                "application/json": {"schema": _ERROR_SCHEMA},
                "text/html": {"schema": {"type": "string"}},
            },
        }
        for status in statuses
    }


def page(description: str = "A page") -> dict[int | str, dict[str, Any]]:
    """The 200 of a route that answers with an HTML page."""
    return {200: {"description": description, "content": {"text/html": {}}}}


def form_or_json(schema: dict[str, Any], *, required: list[str]) -> dict[str, Any]:
    """`openapi_extra=` for a route that reads a form or the same fields as JSON."""
    form = {"type": "object", "properties": schema, "required": required}
    # In JSON an optional field may also be null: the same as leaving it out.
    nullable = {
        name: field if name in required else {"anyOf": [field, {"type": "null"}]}
        for name, field in schema.items()
    }
    json = {"type": "object", "properties": nullable, "required": required}
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": json},
                "application/x-www-form-urlencoded": {"schema": form},
            },
        }
    }


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _zones() -> list[str]:
    from zoneinfo import available_timezones

    return sorted(available_timezones())


# A tick box: JSON true or false, or what a form sends (course.readers.signup.yes_or_no).
TICK: dict[str, Any] = {
    "anyOf": [
        {"type": "boolean"},
        {"type": "string", "enum": ["", "0", "1", "true", "false", "on", "off", "yes", "no"]},
    ]
}
# The fields of a sign-up, as course.readers.signup.EnrollRequest reads them.
ENROLL_FIELDS: dict[str, Any] = {
    "email": {
        "type": "string",
        "format": "email",
        "maxLength": 254,
        # Special-use domains take no mail (RFC 6761): refused, as email-validator does.
        "not": {"pattern": r"(?i)\.(arpa|invalid|local|localhost|onion|test)$"},
    },
    "first_name": {
        "type": "string",
        "maxLength": 40,
        # Empty, or letters, then letters, spaces, dots, apostrophes and dashes
        # (signup.NAME_RE), with spaces around it dropped.
        "pattern": r"^\s*(?:[^\W\d_](?:[^\W\d_]|[ .'\u2019\-])*)?\s*$",
    },
    "time_zone": {"type": "string", "enum": _zones()},
    "send_hour": {
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": 23},
            {"type": "string", "pattern": r"^(?:(?:[01]?\d|2[0-3])(?::00)?)?$"},
        ]
    },
    "relationship": {"type": "string", "enum": list(PERSONA_VALUES["relationship"])},
    "substance": {"type": "string", "enum": list(PERSONA_VALUES["substance"])},
    "sequence": {"type": "string", "description": "A published course (404 if there is none)"},
    "locale": {"type": "string", "enum": ["en", "es"]},
    "discreet": TICK,
}
ENROLL_BODY = form_or_json(ENROLL_FIELDS, required=["email"])
ENROLL_ANSWERS: dict[int | str, dict[str, Any]] = {
    202: {
        "description": "Taken in: a confirmation email follows (the same for every address)",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "properties": {"status": {"type": "string"}, "message": {"type": "string"}},
                    "required": ["status", "message"],
                }
            }
        },
    },
    200: {
        "description": 'The form\'s answer: a "check your email" page',
        "content": {"text/html": {"schema": {"type": "string"}}},
    },
    **answers(404, *BODY, 429, 503),
}


# The fields of a change on the preferences page: `action` says which change, and which of the
# others it reads (course/web/templates/preferences.html has one form per action).
PREFERENCE_FIELDS: dict[str, Any] = {
    "action": {
        "type": "string",
        "enum": [
            "pause",
            "resume",
            "pace",
            "time",
            "dates",
            "discreet",
            "language",
            "leave",
            "leave_all",
        ],
    },
    "how_long": {"type": "string", "enum": ["week", "month", "resumed"]},
    "pace": {"type": "string", "enum": ["", "1", "2", "3", "7"]},
    "send_hour": ENROLL_FIELDS["send_hour"],
    "time_zone": ENROLL_FIELDS["time_zone"],
    "conversation_on": {"type": "string", "format": "date", "description": "Empty clears it"},
    "treatment_on": {"type": "string", "format": "date", "description": "Empty clears it"},
    "discreet": TICK,
    "locale": {"type": "string", "enum": ["en", "es"]},
}
PREFERENCES_BODY = form_or_json(PREFERENCE_FIELDS, required=["action"])


def install(app: FastAPI) -> None:
    """Build the document once, without FastAPI's own 422 "validation error" answers: no route
    here has parameters FastAPI validates, so none gives them (those that read input document
    their own 422, with the body every error has)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document = get_openapi(title=app.title, version=app.version, routes=app.routes)
            for operations in document.get("paths", {}).values():
                for operation in operations.values():
                    found = operation.get("responses", {}).get("422", {})
                    schema = found.get("content", {}).get("application/json", {}).get("schema", {})
                    if schema.get("$ref", "").endswith("/HTTPValidationError"):
                        del operation["responses"]["422"]
            schemas = document.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = document
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
