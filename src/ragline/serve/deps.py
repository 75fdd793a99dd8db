"""Who a request is and what it may reach: the ``Caller``, the FastAPI dependencies that resolve
and confine it (``caller`` -> ``admin`` / ``tenant_caller`` -> ``collection_of`` / ``reader``),
and the checks several routers share. Shared state is the ``Server`` on ``app.state.server``.

Routes declare these with ``Depends``; FastAPI resolves one dependency once per request, so a
route that needs both ``collection_of`` and ``tenant_caller`` authenticates (and spends a
rate-limit token) once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from fastapi import Depends, Request

from ragline.acl import ACLError, parse_list, visible_to
from ragline.filters import Node
from ragline.rag import RAG
from ragline.serve.collections import Collection
from ragline.serve.control import ControlDB, ControlError, KeyInfo
from ragline.serve.errors import ApiError
from ragline.serve.jobs import Job, JobLimitError
from ragline.serve.server import Server
from ragline.types import content_hash

log = logging.getLogger("ragline.serve")


# --------------------------------------------------------------------------- the caller
@dataclass(frozen=True)
class Caller:
    """Who a request is (docs/security.md): the admin key, a tenant key, or an upstream key
    speaking for one end user."""

    admin: bool
    key_id: str  # "admin" for the admin key
    tenant: str | None  # the key's tenant (None: admin)
    principals: tuple[str, ...] | None  # None: unrestricted (only the admin, and only with read_all)
    upstream: bool = False  # an upstream key: principals are the asserted end user's
    read_all: bool = False  # the admin asked to read documents (X-Ragline-Read-All: 1)

    @property
    def scope(self) -> Node | None:
        """The store prefilter of what this caller may read (None: everything)."""
        return None if self.principals is None else visible_to(self.principals)

    @property
    def owner(self) -> str:
        """Who owns the jobs and evaluations this caller starts: the key, or for an upstream key
        the key and the end user it speaks for (users behind one upstream never see each other's)."""
        if not self.upstream:
            return self.key_id
        return f"{self.key_id}/" + content_hash("\n".join(self.principals or ()))[:16]

    def public(self) -> dict:
        return {"admin": self.admin, "key_id": self.key_id, "tenant": self.tenant,
                "kind": "admin" if self.admin else "upstream" if self.upstream else "tenant",
                "read_all": self.read_all,
                "principals": None if self.principals is None else list(self.principals)}


# --------------------------------------------------------------------------- authentication
async def server_of(request: Request) -> Server:
    """The process's shared state. Async: it does no I/O, so it needs no worker thread."""
    return request.app.state.server


def key_problem(control: ControlDB, key: str) -> tuple[tuple[str, str] | None, KeyInfo | str | None]:
    """Whether a request's key is valid at all, checked before its body is read (KeyFirst,
    outside BodyLimit: a 401 comes before a 413): (None, "admin" or the key's record), or
    (the problem, None). ``caller`` takes the record on and decides what it may do."""
    if not key:
        return ("unauthorized", "an API key is required: 'Authorization: Bearer <key>'"), None
    if control.is_admin(key):
        return None, "admin"
    info = control.authenticate(key)
    if info is None:
        return ("unauthorized", "the API key is not valid"), None
    return (("key_revoked", "the API key has been revoked"), None) if info.revoked else (None, info)


def caller(request: Request) -> Caller:
    server: Server = request.app.state.server
    auth = request.headers.get("authorization", "")
    key = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key", "").strip()
    if not key:
        raise ApiError(401, "unauthorized", "an API key is required: 'Authorization: Bearer <key>'",
                       {"WWW-Authenticate": "Bearer"})
    asserted = request.headers.get("x-ragline-principals")
    checked = request.scope.get("state", {}).get("ragline_key")  # KeyFirst's lookup of this key
    identity = checked[1] if checked is not None and checked[0] == key else None
    if identity == "admin" or (identity is None and server.control.is_admin(key)):
        if asserted is not None:  # the admin administers; it never speaks for a user
            raise ApiError(403, "forbidden", "the admin key cannot assert principals: a trusted upstream uses "
                                             "an upstream key of its tenant (docs/security.md)")
        read_all = request.headers.get("x-ragline-read-all", "").strip().lower() in ("1", "true", "yes")
        who = Caller(True, "admin", None, None, read_all=read_all)
    else:
        info = identity if isinstance(identity, KeyInfo) else server.control.authenticate(key)
        if info is None:
            raise ApiError(401, "unauthorized", "the API key is not valid", {"WWW-Authenticate": "Bearer"})
        if info.revoked:
            raise ApiError(401, "key_revoked", "the API key has been revoked", {"WWW-Authenticate": "Bearer"})
        if info.kind == "upstream":  # fail closed: no stated user, no access
            if asserted is None:
                raise ApiError(400, "principals_required", "an upstream key must state its user's principals "
                                                           "in X-Ragline-Principals")
            try:
                prins = parse_list(asserted)
            except ACLError as exc:
                raise ApiError(400, "invalid_principal", str(exc)) from None
            if not prins:
                raise ApiError(400, "principals_required", "X-Ragline-Principals names no principal")
            who = Caller(False, info.id, info.tenant, prins, upstream=True)
        else:
            if asserted is not None:
                raise ApiError(403, "forbidden", "only an upstream key may assert principals "
                                                 "(X-Ragline-Principals)")
            who = Caller(False, info.id, info.tenant, tuple(sorted({*info.principals, f"key:{info.id}"})))
    # tenant keys are limited; the admin key (operators, trusted upstreams that limit their own
    # users) is not
    wait = 0.0 if who.admin else server.limiter.take(who.key_id)
    if wait > 0:
        raise ApiError(429, "rate_limited", f"too many requests for this key; retry in {wait:.1f} s",
                       {"Retry-After": str(max(1, round(wait)))})
    return who


# --------------------------------------------------------------------------- confinement
def admin(who: Caller = Depends(caller)) -> Caller:
    if not who.admin:
        raise ApiError(403, "forbidden", "this needs the admin key")
    return who


def tenant_caller(tenant: str, request: Request, who: Caller = Depends(caller)) -> Caller:
    # the same answer for "no such tenant" and "not yours": a key learns nothing of other tenants
    if (not who.admin and who.tenant != tenant) or not request.app.state.server.control.tenant_exists(tenant):
        raise ApiError(404, "not_found", f"no tenant '{tenant}'")
    return who


def collection_of(tenant: str, collection: str, request: Request, who: Caller = Depends(tenant_caller)) -> Collection:
    return request.app.state.server.collection(tenant, collection)


def reader(who: Caller = Depends(tenant_caller)) -> Caller:
    """Routes that return document text (query, ask, evaluations): the admin key administers
    and reads documents only when it asks to explicitly (X-Ragline-Read-All: 1)."""
    if who.admin and not who.read_all:
        raise ApiError(403, "admin_read_not_requested",
                       "the admin key does not read documents unless it asks to: send 'X-Ragline-Read-All: 1'")
    if who.admin:
        log.info("admin read-all request on tenant %s", who.tenant)
    return who


# --------------------------------------------------------------------------- shared checks
def ready(server: Server) -> None:
    if not server.ready.is_set():
        raise ApiError(503, "not_ready", server.load_error or "the embedding model is still loading; retry shortly",
                       {"Retry-After": "2"})


def control_call(fn, *args):
    try:
        return fn(*args)
    except ControlError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None
    except ACLError as exc:
        raise ApiError(400, "invalid_principal", str(exc)) from None


def queue_job(server: Server, job: Job, work, discard=None, spec: dict | None = None) -> Job:
    try:
        return server.jobs.submit(job, work, discard, spec)
    except JobLimitError as exc:
        if discard is not None:
            discard()
        raise ApiError(429, "too_many_jobs", str(exc), {"Retry-After": "5"}) from None


def flow(server: Server, col: Collection) -> RAG:
    """The RAG flow over a collection, with the process's answerer (the LLM settings are the server's)."""
    return col.rag(server.answerer)


def eval_dir(col: Collection) -> Path:
    """Where a collection's evaluation results are kept (deleting a document scrubs them too)."""
    return col.root / "evaluations"
