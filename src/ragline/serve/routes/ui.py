"""The web UI (static files under serve/ui/, no key needed to load them) and ``/docs``, which
points at the OpenAPI document: no interactive docs are served (FastAPI's load scripts from a CDN)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).parent.parent / "ui"


async def ui_headers(request: Request, call_next):
    """HTTP middleware (``create_app`` places it): the UI's own headers on its pages and files."""
    response = await call_next(request)
    if request.url.path == "/" or request.url.path.startswith("/ui/"):
        # the UI runs no inline script and loads nothing from elsewhere; and after an upgrade
        # browsers must not keep old modules
        response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:"
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def index() -> FileResponse:
    return FileResponse(UI_DIR / "index.html")


def docs() -> dict:
    return {"openapi": "/openapi.json", "message": "the API is described by its OpenAPI document at "
            "/openapi.json; open it in any OpenAPI viewer (no interactive docs are served)"}


def install(app: FastAPI) -> None:
    """Mount the UI's files at /ui and its page at / (when the UI is shipped), then /docs.
    A mount is the app's own route (``include_router`` carries none), so this takes the app."""
    router = APIRouter()
    if UI_DIR.is_dir():
        app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")
        router.add_api_route("/", index, methods=["GET"], include_in_schema=False)
    router.add_api_route("/docs", docs, methods=["GET"], include_in_schema=False)
    app.include_router(router)
