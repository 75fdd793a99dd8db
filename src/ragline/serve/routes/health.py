"""Liveness and readiness: no key needed (load balancers and the test harness poll them)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ragline.serve.deps import server_of
from ragline.serve.server import Server

router = APIRouter()


@router.get("/healthz", tags=["health"])
def healthz() -> dict:
    return {"status": "ok"}


@router.get("/readyz", tags=["health"])
def readyz(server: Server = Depends(server_of)) -> JSONResponse:
    if server.ready.is_set():
        return JSONResponse({"status": "ready", "jobs_queued": server.jobs.pending()})
    body = {"error": {"code": "not_ready", "message": server.load_error or "loading the embedding model"}}
    return JSONResponse(body, status_code=503)
