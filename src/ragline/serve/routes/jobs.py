"""A collection's jobs (uploads, re-ingests, evaluations): list, read, cancel. A job names files
and documents, so only the key that submitted it (and the admin) reads it."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from ragline.serve.collections import Collection
from ragline.serve.deps import Caller, collection_of, server_of, tenant_caller
from ragline.serve.errors import ApiError
from ragline.serve.jobs import Job
from ragline.serve.server import Server

router = APIRouter()


def job_visible(who: Caller, job: Job) -> bool:
    return who.admin or job.owner == who.owner


@router.get("/v1/tenants/{tenant}/collections/{collection}/jobs", tags=["jobs"])
def list_jobs(tenant: str, collection: str, _: Collection = Depends(collection_of),
              who: Caller = Depends(tenant_caller), server: Server = Depends(server_of)) -> dict:
    mine = [j for j in server.jobs.list(tenant, collection) if job_visible(who, j)]
    return {"jobs": [j.public() for j in mine[:100]]}


@router.get("/v1/tenants/{tenant}/collections/{collection}/jobs/{job_id}", tags=["jobs"])
def get_job(tenant: str, collection: str, job_id: str, _: Collection = Depends(collection_of),
            who: Caller = Depends(tenant_caller), server: Server = Depends(server_of)) -> dict:
    job = server.jobs.get(tenant, job_id)
    if job is None or job.collection != collection or not job_visible(who, job):
        raise ApiError(404, "not_found", f"no job '{job_id}'")
    return job.public()


@router.post("/v1/tenants/{tenant}/collections/{collection}/jobs/{job_id}/cancel", tags=["jobs"],
             responses={202: {"description": "running: it stops at its next file or item"}})
def cancel_job(tenant: str, collection: str, job_id: str, _: Collection = Depends(collection_of),
               who: Caller = Depends(tenant_caller), server: Server = Depends(server_of)) -> JSONResponse:
    """Cancel an upload or an evaluation: a queued one at once (200, "cancelled"); a running one
    stops at its next file or item and keeps what it finished (202; poll the job)."""
    job = server.jobs.get(tenant, job_id)
    if job is None or job.collection != collection or not job_visible(who, job):
        raise ApiError(404, "not_found", f"no job '{job_id}'")
    outcome = server.jobs.cancel(job)
    if outcome == "finished":
        raise ApiError(409, "job_finished", f"job '{job_id}' has already finished ({job.status}); "
                                            "there is nothing to cancel")
    return JSONResponse(job.public(), status_code=200 if outcome == "cancelled" else 202)
