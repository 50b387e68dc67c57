"""`/health`: 503 unless the schema is current, a course is published and Redis answers; the
JSON says which, and what to run."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from course.db import schema_state
from course.web.deps import EngineDep, SettingsDep
from course.web.routes.signup import open_courses

router = APIRouter()


_STATE = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["ok", "unhealthy"]},
        "database": {"type": "string"},
        "courses": {"type": "string"},
        "redis": {"type": "string"},
    },
    "required": ["status", "database", "redis"],
}


@router.get(
    "/health",
    responses={
        200: {"description": "All is well", "content": {"application/json": {"schema": _STATE}}},
        503: {
            "description": "Something is not: each part says what, and what to run",
            "content": {"application/json": {"schema": _STATE}},
        },
    },
)
def health(settings: SettingsDep, engine: EngineDep) -> JSONResponse:
    checks: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            schema = schema_state(conn)
        checks["database"] = {
            "current": "ok",
            "behind": "schema out of date: run course db upgrade",
            "ahead": "schema is newer than this code: run the release that migrated it",
        }[schema]
        if schema == "current":
            checks["courses"] = (
                "ok"
                if open_courses(engine, settings, fresh=True)
                else "none published: run course lessons publish PATH"
            )
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        import redis

        client = redis.Redis.from_url(
            settings.redis_url or "redis://127.0.0.1:6379/0", socket_timeout=2
        )
        client.ping()
        checks["redis"] = "ok"
    except Exception as exc:
        checks["redis"] = f"error: {type(exc).__name__}"
    ok = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "unhealthy", **checks}, status_code=200 if ok else 503
    )
