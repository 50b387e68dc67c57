"""Pages anyone may need at any time: what to do in an overdose, and the site's icon."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from course.web.pages import page

router = APIRouter()
FAVICON = (Path(__file__).parent.parent / "static" / "favicon.ico").read_bytes()


@router.get("/crisis", response_class=HTMLResponse)
def crisis(request: Request) -> HTMLResponse:
    return page(request, "crisis.html")


@router.get("/favicon.ico", include_in_schema=False)
def favicon() -> Response:
    return Response(
        FAVICON, media_type="image/x-icon", headers={"Cache-Control": "public, max-age=86400"}
    )
