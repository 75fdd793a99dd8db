"""The HTTP API (FastAPI): tenants, keys, collections, documents, jobs, query, ask, evaluations.

Every route under ``/v1/tenants/{tenant}`` is confined to that tenant: the caller's key must
belong to it (or be the admin key). Inside a collection, every read goes through the caller's
principals as a store prefilter (retrieve/acl.py). See docs/serve.md.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from ragline.config import Settings
from ragline.ingest.parsers import SUPPORTED_EXTENSIONS
from ragline.ingest.sync import doc_id_for
from ragline.retrieve.acl import EVERYONE, WRITER_ROLE, ACLError, acl_clause, parse_list, principals as valid_principals
from ragline.retrieve.filters import FilterError
from ragline.serve.collections import Collection, registered_files, safe_filename
from ragline.serve.control import ControlDB, ControlError, KeyInfo
from ragline.serve.errors import ApiError, install as install_errors
from ragline.serve.jobs import Job, JobCancelled, JobLimitError, JobRunner
from ragline.serve.limits import BodyLimit, KeyFirst, RateLimiter, SecurityHeaders
from ragline.store.base import DocRecord
from ragline.types import Answer, Hit, content_hash

log = logging.getLogger("ragline.serve")
UI_DIR = Path(__file__).parent / "ui"


# --------------------------------------------------------------------------- request bodies
class TenantIn(BaseModel):
    name: str


class KeyIn(BaseModel):
    name: str = ""
    principals: list[str] = Field(default_factory=list, description="e.g. ['user:alice', 'group:eng']")
    kind: Literal["tenant", "upstream"] = Field(
        "tenant", description="'upstream': a trusted service of this tenant that states each request's user "
                              "principals in X-Ragline-Principals (docs/security.md)")


class CollectionIn(BaseModel):
    name: str


class RegisterIn(BaseModel):
    paths: list[str] = Field(min_length=1, description="server-side files or folders (admin key only)")
    acl: list[str] | None = None


class _Retrieval(BaseModel):
    mode: Literal["hybrid", "dense", "sparse"] | None = None  # default: the server's retrieve.mode
    filter: str | None = Field(None, max_length=2000, description="a filter expression (docs/filters.md)")


class QueryIn(_Retrieval):
    query: str = Field(min_length=1, max_length=4000)
    k: int = Field(10, ge=1, le=100)
    documents: bool = False


class AskIn(_Retrieval):
    question: str = Field(min_length=1, max_length=4000)
    k: int = Field(5, ge=1, le=50)
    stream: bool = False


class EvalIn(BaseModel):
    items: list[dict[str, Any]] = Field(min_length=1, max_length=1000,
                                        description="QA items: question, answer, relevant_ids, contexts, answerable")
    k: int = Field(5, ge=1, le=50)
    mode: Literal["hybrid", "dense", "sparse"] | None = None


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
    def acl_where(self) -> str | None:
        return None if self.principals is None else acl_clause(self.principals)

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


class Server:
    """Shared state of one serving process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.data = (settings.home / "serve").resolve()
        self.data.mkdir(parents=True, exist_ok=True)
        self.control = ControlDB(self.data / "control.sqlite")
        self.admin_key_file: Path | None = None
        self._set_up_admin(settings.serve.admin_key)
        self.jobs = JobRunner(settings.serve.job_workers, settings.serve.max_jobs_per_tenant)
        self.limiter = RateLimiter(settings.serve.rate_limit_per_minute, settings.serve.rate_limit_burst)
        self._collections: dict[tuple[str, str], Collection] = {}
        self._lock = threading.Lock()
        self.ready = threading.Event()
        self.load_error: str | None = None
        s = settings.llm
        self.llm_settings = settings.model_copy(update={"llm": s.model_copy(
            update={"timeout_s": min(s.timeout_s, settings.serve.llm_timeout_s)})})

    def _set_up_admin(self, configured: str | None) -> None:
        if configured:
            self.control.set_admin(configured)
            return
        path = self.data / "admin.key"
        if path.exists() and self.control.admin_hash():
            self.admin_key_file = path
            return
        key = "rl_admin_" + secrets.token_urlsafe(32).replace("_", "-")
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(key + "\n")
        self.control.set_admin(key)
        self.admin_key_file = path

    @property
    def embedder(self):
        from ragline.app import Engine

        if not hasattr(self, "_embedder"):
            self._embedder = Engine(self.settings).embedder
        return self._embedder

    @cached_property
    def generator(self):
        """The answerer: extractive offline, else the configured LLM (one HTTP client, reused)."""
        from ragline.app import Engine

        eng = Engine(self.llm_settings)
        eng.__dict__["embedder"] = self.embedder
        return eng.generator()

    def warm_up(self) -> None:
        try:
            self.embedder.embed_query("warm up")
            self.ready.set()
        except Exception as exc:
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("the embedding model failed to load: %s", self.load_error)

    # -- collections ------------------------------------------------------------------------
    def tenant_dir(self, tenant: str) -> Path:
        return self.data / "tenants" / tenant

    def collection(self, tenant: str, name: str) -> Collection:
        if not self.control.collection_exists(tenant, name):
            raise ApiError(404, "not_found", f"no collection '{name}' in tenant '{tenant}'")
        key = (tenant, name)
        with self._lock:
            col = self._collections.get(key)
            if col is None:
                root = self.tenant_dir(tenant) / "collections" / name
                col = Collection(tenant, name, root, self.settings, self.embedder)
                self._collections[key] = col
            return col

    def drop_collection(self, tenant: str, name: str) -> None:
        col = self.collection(tenant, name)
        with self._lock:
            self._collections.pop((tenant, name), None)
        self.control.delete_collection(tenant, name)
        col.drop()
        self.jobs.forget(tenant, name)

    def drop_tenant(self, tenant: str) -> None:
        for c in self.control.collections(tenant):
            self.drop_collection(tenant, c["name"])
        self.control.delete_tenant(tenant)
        shutil.rmtree(self.tenant_dir(tenant), ignore_errors=True)
        self.jobs.forget(tenant)


# --------------------------------------------------------------------------- serialisers
def doc_json(col: Collection, rec: DocRecord, text: bool = False) -> dict:
    out = {"id": rec.doc_id, "name": col.display(rec.source), "type": rec.type, "title": rec.title,
           "year": rec.year, "chunks": rec.n_chunks, "size": rec.size, "acl": list(rec.acl),
           "updated": rec.mtime}
    if '"injection"' in rec.metadata and (json.loads(rec.metadata).get("injection") or {}).get("flagged"):
        out["flags"] = ["instruction-like text"]  # aimed at a model: docs/security-injection.md
    if text:
        out["text"] = rec.text
        out["sections"] = json.loads(rec.sections)
    return out


def hit_json(col: Collection, rank: int, hit: Hit) -> dict:
    c = hit.chunk
    return {"rank": rank, "score": round(hit.score, 6), "scores": {k: round(v, 6) for k, v in hit.scores.items()},
            "document_id": c.doc_id, "chunk_id": c.id, "source": col.display(c.source), "text": c.text,
            "span": [c.start, c.end], "page": c.page, "heading_path": list(c.heading_path)}


def answer_json(col: Collection, question: str, answer: Answer) -> dict:
    return {"question": question, "answer": answer.text, "grounded": answer.grounded, "generator": answer.generator,
            "citations": [{"n": c.n, "document_id": c.chunk.doc_id, "chunk_id": c.chunk.id,
                           "source": col.display(c.chunk.source),
                           "page": c.page if c.page is not None else c.chunk.page,
                           "heading_path": list(c.heading_path or c.chunk.heading_path),
                           "span": [c.start, c.end] if c.start is not None else [c.chunk.start, c.chunk.end],
                           "snippet": c.snippet} for c in answer.citations]}


# --------------------------------------------------------------------------- the app
def create_app(settings: Settings, warm: bool = True) -> FastAPI:
    server = Server(settings)
    # no Swagger UI: FastAPI's loads its scripts from a CDN (a floating version, no integrity hash)
    app = FastAPI(title="ragline", version=_version(), docs_url=None, redoc_url=None,
                  description="Retrieval-augmented generation over your documents, per tenant and collection, "
                              "with document-level access control. Errors are JSON: {\"error\": {\"code\", \"message\"}}.")
    app.state.server = server
    install_errors(app)
    sv = settings.serve
    app.add_middleware(BodyLimit, max_bytes=int(sv.max_request_mb * 2**20), max_json_bytes=int(sv.max_json_kb * 1024))

    def key_problem(key: str) -> tuple[tuple[str, str] | None, KeyInfo | str | None]:
        """Whether a request's key is valid at all, checked before its body is read (KeyFirst,
        outside BodyLimit: a 401 comes before a 413): (None, "admin" or the key's record), or
        (the problem, None). ``caller`` takes the record on and decides what it may do."""
        if not key:
            return ("unauthorized", "an API key is required: 'Authorization: Bearer <key>'"), None
        if server.control.is_admin(key):
            return None, "admin"
        info = server.control.authenticate(key)
        if info is None:
            return ("unauthorized", "the API key is not valid"), None
        return (("key_revoked", "the API key has been revoked"), None) if info.revoked else (None, info)

    app.add_middleware(KeyFirst, check=key_problem)
    if warm:
        threading.Thread(target=server.warm_up, name="ragline-warm-up", daemon=True).start()
    else:
        server.warm_up()

    # -- authentication ----------------------------------------------------------------------
    def caller(request: Request) -> Caller:
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

    def admin(who: Caller = Depends(caller)) -> Caller:
        if not who.admin:
            raise ApiError(403, "forbidden", "this needs the admin key")
        return who

    def tenant_caller(tenant: str, who: Caller = Depends(caller)) -> Caller:
        # the same answer for "no such tenant" and "not yours": a key learns nothing of other tenants
        if (not who.admin and who.tenant != tenant) or not server.control.tenant_exists(tenant):
            raise ApiError(404, "not_found", f"no tenant '{tenant}'")
        return who

    def collection_of(tenant: str, collection: str, who: Caller = Depends(tenant_caller)) -> Collection:
        return server.collection(tenant, collection)

    def reader(who: Caller = Depends(tenant_caller)) -> Caller:
        """Routes that return document text (query, ask, evaluations): the admin key administers
        and reads documents only when it asks to explicitly (X-Ragline-Read-All: 1)."""
        if who.admin and not who.read_all:
            raise ApiError(403, "admin_read_not_requested",
                           "the admin key does not read documents unless it asks to: send 'X-Ragline-Read-All: 1'")
        if who.admin:
            log.info("admin read-all request on tenant %s", who.tenant)
        return who

    def ready() -> None:
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

    # -- health ------------------------------------------------------------------------------
    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    def readyz() -> JSONResponse:
        if server.ready.is_set():
            return JSONResponse({"status": "ready", "jobs_queued": server.jobs.pending()})
        body = {"error": {"code": "not_ready", "message": server.load_error or "loading the embedding model"}}
        return JSONResponse(body, status_code=503)

    # -- tenants and keys (admin) --------------------------------------------------------------
    @app.post("/v1/tenants", status_code=201, tags=["tenants"])
    def create_tenant(body: TenantIn, _: Caller = Depends(admin)) -> dict:
        return control_call(server.control.create_tenant, body.name)

    @app.get("/v1/tenants", tags=["tenants"])
    def list_tenants(_: Caller = Depends(admin)) -> dict:
        return {"tenants": server.control.tenants()}

    @app.delete("/v1/tenants/{tenant}", tags=["tenants"])
    def delete_tenant(tenant: str, _: Caller = Depends(admin)) -> dict:
        if not server.control.tenant_exists(tenant):
            raise ApiError(404, "not_found", f"no tenant '{tenant}'")
        server.drop_tenant(tenant)
        return {"deleted": tenant}

    @app.post("/v1/tenants/{tenant}/keys", status_code=201, tags=["keys"])
    def create_key(tenant: str, body: KeyIn, _: Caller = Depends(admin)) -> dict:
        if not server.control.tenant_exists(tenant):
            raise ApiError(404, "not_found", f"no tenant '{tenant}'")
        key, info = control_call(server.control.create_key, tenant, body.name, body.principals, body.kind)
        return {"key": key, **info.public(), "note": "the key is shown only now; it is stored hashed"}

    @app.get("/v1/tenants/{tenant}/keys", tags=["keys"])
    def list_keys(tenant: str, _: Caller = Depends(admin)) -> dict:
        return {"keys": [k.public() for k in server.control.keys(tenant)]}

    @app.delete("/v1/tenants/{tenant}/keys/{key_id}", tags=["keys"])
    def revoke_key(tenant: str, key_id: str, _: Caller = Depends(admin)) -> dict:
        if not server.control.revoke_key(tenant, key_id):
            raise ApiError(404, "not_found", f"no key '{key_id}' in tenant '{tenant}'")
        return {"revoked": key_id}

    @app.get("/v1/tenants/{tenant}/whoami", tags=["keys"])
    def whoami(tenant: str, who: Caller = Depends(tenant_caller)) -> dict:
        return {**who.public(), "tenant": tenant}

    # -- collections ---------------------------------------------------------------------------
    @app.post("/v1/tenants/{tenant}/collections", status_code=201, tags=["collections"])
    def create_collection(tenant: str, body: CollectionIn, _: Caller = Depends(tenant_caller)) -> dict:
        return control_call(server.control.create_collection, tenant, body.name)

    @app.get("/v1/tenants/{tenant}/collections", tags=["collections"])
    def list_collections(tenant: str, who: Caller = Depends(tenant_caller)) -> dict:
        out = []
        for c in server.control.collections(tenant):
            col = server.collection(tenant, c["name"])
            out.append({**c, "documents": len(col.documents(who.acl_where))})
        return {"collections": out}

    @app.delete("/v1/tenants/{tenant}/collections/{collection}", tags=["collections"])
    def delete_collection(tenant: str, collection: str, who: Caller = Depends(tenant_caller)) -> dict:
        if not who.admin:
            raise ApiError(403, "forbidden", "deleting a collection needs the admin key")
        server.drop_collection(tenant, collection)
        return {"deleted": collection}

    # -- documents -----------------------------------------------------------------------------
    def ingest_job(col: Collection, who: Caller, kind: str, staged: list[tuple[Path | None, Path, str]],
                   acl: tuple[str, ...] | None, rejected: list[dict]) -> Job:
        """Queue the indexing of files: (staged upload or None, final path, display name)."""
        job = Job(id="", tenant=col.tenant, collection=col.name, kind=kind, owner=who.owner,
                  files=[name for _, _, name in staged] + [r["file"] for r in rejected])
        job.errors.extend(rejected)
        job.done = len(rejected)

        def work(job: Job) -> None:
            if not server.control.collection_exists(col.tenant, col.name):
                job.errors.append({"file": None, "reason": "the collection was deleted"})
                job.status = "failed"
                return
            names = {str(final): name for _, final, name in staged}
            paths = []
            with col.write_lock:  # uploads take their final names one writer at a time
                if job.stopping():  # cancelled while it waited for the lock: nothing moved, nothing indexed
                    discard()
                    job.report = {"not_processed": [name for _, _, name in staged]}
                    return
                for tmp, final, name in staged:
                    if tmp is not None:
                        final.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(tmp, final)
                        shutil.rmtree(tmp.parent, ignore_errors=True)
                    paths.append(final)

            def on_event(kind: str, data: dict) -> None:
                if kind == "file" and data.get("path") in names:
                    job.done += 1
                    if data.get("status") == "failed":
                        job.errors.append({"file": names[data["path"]], "reason": data.get("reason", "failed")})
                    else:
                        job.documents.append(doc_id_for(data["path"]))
                # a cancel stops the run here, after a file's outcome or a commit; what was committed stays
                if kind == "batch" or (kind == "file" and data.get("status") in ("skipped", "failed")):
                    job.check()

            try:
                report = col.ingest(paths, acl, on_event)
            except JobCancelled:
                stop_ingest(col, job, staged)
                raise
            for f in report.failed:  # files that never reached on_event (missing, unreadable)
                if f.path in names and not any(e["file"] == names[f.path] for e in job.errors):
                    job.errors.append({"file": names[f.path], "reason": f.reason})
                    job.done += 1
            job.done = len(job.files)
            job.report = {k: v for k, v in report.as_dict().items() if k not in ("failed",)}
            job.report["flagged"] = [names.get(p, col.display(p)) for p in report.flagged]

        def discard() -> None:  # cancelled before it ran: the staged uploads go
            for tmp, _, _ in staged:
                if tmp is not None:
                    shutil.rmtree(tmp.parent, ignore_errors=True)

        return queue_job(job, work, discard)

    def stop_ingest(col: Collection, job: Job, staged: list[tuple[Path | None, Path, str]]) -> None:
        """A cancelled run stopped before its last step: make what it committed searchable, and
        remove the uploaded originals it never indexed (the job lists them as not processed)."""
        with col.write_lock:
            col.store.finish()
            left = []
            for tmp, final, name in staged:
                if doc_id_for(str(final)) in job.documents or any(e["file"] == name for e in job.errors):
                    continue
                left.append(name)
                if tmp is not None and col.document(doc_id_for(str(final)), None) is None:
                    final.unlink(missing_ok=True)
        job.report = {"not_processed": left}

    def queue_job(job: Job, work, discard=None) -> Job:
        try:
            return server.jobs.submit(job, work, discard)
        except JobLimitError as exc:
            if discard is not None:
                discard()
            raise ApiError(429, "too_many_jobs", str(exc), {"Retry-After": "5"}) from None

    def job_room(tenant: str) -> None:
        """429 before an upload is staged when the tenant has serve.max_jobs_per_tenant jobs already."""
        try:
            server.jobs.admit(tenant)
        except JobLimitError as exc:
            raise ApiError(429, "too_many_jobs", str(exc), {"Retry-After": "5"}) from None

    def check_writer(who: Caller, acl: tuple[str, ...] | None) -> None:
        """A caller may create only documents it can read itself: the ACL must name one of its
        principals (or everyone), unless it holds the writer role. Otherwise it could create a
        document that it can then neither see nor remove."""
        if who.principals is None or acl is None:
            return
        if WRITER_ROLE in who.principals or set(acl) & {EVERYONE, *who.principals}:
            return
        raise ApiError(403, "forbidden", "this key may not create a document it could not read: the acl must name "
                                         f"one of its principals ({', '.join(who.principals)}) or the key must hold "
                                         f"'{WRITER_ROLE}'")

    def check_replace(col: Collection, who: Caller, final: Path) -> None:
        """A caller may replace only a document it can read (it could otherwise destroy or
        re-permission what it cannot see)."""
        if who.principals is None:
            return
        doc_id = doc_id_for(str(final))
        if col.document(doc_id, None) is not None and col.document(doc_id, who.acl_where) is None:
            raise ApiError(403, "forbidden", f"a document named '{col.display(str(final))}' exists and this key "
                                             "may not replace it")

    @app.post("/v1/tenants/{tenant}/collections/{collection}/documents", status_code=202, tags=["documents"])
    async def upload_documents(request: Request, tenant: str, collection: str,
                               files: list[UploadFile] = File(..., description="one or more files"),
                               acl: str | None = Form(None, description="comma-separated principals; default '*'"),
                               who: Caller = Depends(tenant_caller)) -> dict:
        col = server.collection(tenant, collection)
        ready()
        job_room(tenant)
        try:
            acl_t = parse_list(acl) if acl is not None else None
        except ACLError as exc:
            raise ApiError(400, "invalid_principal", str(exc)) from None
        if acl_t == ():
            raise ApiError(400, "invalid_principal", "acl is empty: name at least one principal, or '*'")
        check_writer(who, acl_t)
        staged, rejected, seen = [], [], set()
        limit = int(server.settings.ingest.max_file_mb * 2**20)
        stage_root = col.root / "staging"
        for up in files:
            name = safe_filename(up.filename or "upload")
            ext = Path(name).suffix.lower()
            if ext not in SUPPORTED_EXTENSIONS:
                rejected.append({"file": name, "reason": f"unsupported file type '{ext or name}'; supported: "
                                                         + " ".join(sorted(SUPPORTED_EXTENSIONS))})
                continue
            if name in seen:
                rejected.append({"file": name, "reason": "the same name twice in one upload"})
                continue
            # never a document the caller cannot read: it decides nothing (Collection.upload_path)
            final = await run_in_threadpool(col.upload_path, name, who.principals)
            await run_in_threadpool(check_replace, col, who, final)
            tmp_dir = stage_root / secrets.token_hex(8)
            tmp_dir.mkdir(parents=True, exist_ok=True)
            tmp = tmp_dir / name
            size = 0
            with open(tmp, "wb") as f:
                while chunk := await up.read(1 << 20):
                    size += len(chunk)
                    if size > limit:
                        break
                    f.write(chunk)
            if size > limit:
                shutil.rmtree(tmp_dir, ignore_errors=True)
                rejected.append({"file": name, "reason": f"larger than the {limit / 2**20:.0f} MiB file limit"})
                continue
            seen.add(name)
            staged.append((tmp, final, name))
        if not staged:
            reasons = "; ".join(f"{r['file']}: {r['reason']}" for r in rejected)
            raise ApiError(415, "unsupported_type", f"no file can be ingested ({reasons})")
        job = ingest_job(col, who, "ingest", staged, acl_t, rejected)
        return {"job": job.public()}

    @app.post("/v1/tenants/{tenant}/collections/{collection}/documents/register", status_code=202, tags=["documents"])
    def register_paths(tenant: str, collection: str, body: RegisterIn, who: Caller = Depends(tenant_caller)) -> dict:
        if not who.admin:
            raise ApiError(403, "forbidden", "registering server-side paths needs the admin key")
        col = server.collection(tenant, collection)
        ready()
        try:
            acl_t = valid_principals(body.acl) if body.acl is not None else None
        except ACLError as exc:
            raise ApiError(400, "invalid_principal", str(exc)) from None
        staged, rejected = [], []
        for p in body.paths:
            path = Path(p).expanduser().resolve()
            if not path.exists():
                rejected.append({"file": p, "reason": "not found on the server"})
                continue
            col.register_root(path)  # its documents show as "<folder>/sub/file", not server paths
            for f, reason in registered_files(path):
                if reason is not None:  # e.g. a symlink out of the folder: refused and reported
                    rejected.append({"file": col.display(str(f)), "reason": reason})
                elif f.suffix.lower() in SUPPORTED_EXTENSIONS:
                    staged.append((None, f, col.display(str(f))))
        if not staged:
            raise ApiError(400, "no_files", "no supported file at the given paths"
                           + "".join(f"; {r['file']}: {r['reason']}" for r in rejected))
        return {"job": ingest_job(col, who, "ingest", staged, acl_t, rejected).public()}

    @app.get("/v1/tenants/{tenant}/collections/{collection}/documents", tags=["documents"])
    def list_documents(col: Collection = Depends(collection_of), who: Caller = Depends(tenant_caller)) -> dict:
        return {"documents": [doc_json(col, r) for r in col.documents(who.acl_where)]}

    def visible_document(col: Collection, who: Caller, doc_id: str) -> DocRecord:
        rec = col.document(doc_id, who.acl_where)
        if rec is None:  # absent and forbidden look the same
            raise ApiError(404, "not_found", f"no document '{doc_id}'")
        return rec

    @app.get("/v1/tenants/{tenant}/collections/{collection}/documents/{doc_id}", tags=["documents"])
    def get_document(doc_id: str, text: bool = False, col: Collection = Depends(collection_of),
                     who: Caller = Depends(tenant_caller)) -> dict:
        if text:
            reader(who)  # the text is document content: the admin must ask to read it
        return doc_json(col, visible_document(col, who, doc_id), text=text)

    @app.post("/v1/tenants/{tenant}/collections/{collection}/documents/{doc_id}/reingest", status_code=202,
              tags=["documents"])
    def reingest(doc_id: str, col: Collection = Depends(collection_of), who: Caller = Depends(tenant_caller)) -> dict:
        ready()
        rec = visible_document(col, who, doc_id)
        job = ingest_job(col, who, "reingest", [(None, Path(rec.source), col.display(rec.source))], None, [])
        return {"job": job.public()}

    @app.delete("/v1/tenants/{tenant}/collections/{collection}/documents/{doc_id}", tags=["documents"])
    def delete_document(doc_id: str, col: Collection = Depends(collection_of), who: Caller = Depends(tenant_caller)) -> dict:
        name = col.display(visible_document(col, who, doc_id).source)
        col.delete([doc_id])
        server.jobs.scrub(col.tenant, col.name, doc_id, name)
        folder = eval_dir(col)  # evaluation results that quote or rank it go with it
        for path in folder.glob("*.json") if folder.exists() else []:
            try:
                items = json.loads(path.read_text("utf-8")).get("items", [])
            except (OSError, ValueError):
                continue
            if any(name in it.get("sources", []) or name in it.get("ranked_documents", []) for it in items):
                path.unlink(missing_ok=True)
        return {"deleted": doc_id}

    # -- jobs ----------------------------------------------------------------------------------
    # A job names files and documents, so only the key that submitted it (and the admin) reads it.
    def job_visible(who: Caller, job: Job) -> bool:
        return who.admin or job.owner == who.owner

    @app.get("/v1/tenants/{tenant}/collections/{collection}/jobs", tags=["jobs"])
    def list_jobs(tenant: str, collection: str, _: Collection = Depends(collection_of),
                  who: Caller = Depends(tenant_caller)) -> dict:
        mine = [j for j in server.jobs.list(tenant, collection) if job_visible(who, j)]
        return {"jobs": [j.public() for j in mine[:100]]}

    @app.get("/v1/tenants/{tenant}/collections/{collection}/jobs/{job_id}", tags=["jobs"])
    def get_job(tenant: str, collection: str, job_id: str, _: Collection = Depends(collection_of),
                who: Caller = Depends(tenant_caller)) -> dict:
        job = server.jobs.get(tenant, job_id)
        if job is None or job.collection != collection or not job_visible(who, job):
            raise ApiError(404, "not_found", f"no job '{job_id}'")
        return job.public()

    @app.post("/v1/tenants/{tenant}/collections/{collection}/jobs/{job_id}/cancel", tags=["jobs"],
              responses={202: {"description": "running: it stops at its next file or item"}})
    def cancel_job(tenant: str, collection: str, job_id: str, _: Collection = Depends(collection_of),
                   who: Caller = Depends(tenant_caller)) -> JSONResponse:
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

    # -- query and ask -------------------------------------------------------------------------
    def search(col: Collection, who: Caller, text: str, k: int, mode, flt, documents: bool) -> list[Hit]:
        ready()
        req = col.retriever.request(text, k=k, mode=mode, filter=flt, aggregate="document" if documents else None)
        from dataclasses import replace

        req = replace(req, principals=who.principals)
        try:
            return col.search(req)
        except FilterError as exc:
            raise ApiError(400, "invalid_filter", str(exc)) from None

    @app.post("/v1/tenants/{tenant}/collections/{collection}/query", tags=["search"])
    def query(body: QueryIn, col: Collection = Depends(collection_of), who: Caller = Depends(reader)) -> dict:
        t0 = time.perf_counter()
        hits = search(col, who, body.query, body.k, body.mode, body.filter, body.documents)
        return {"query": body.query, "hits": [hit_json(col, i + 1, h) for i, h in enumerate(hits)],
                "took_ms": round((time.perf_counter() - t0) * 1000, 2)}

    def generator(col: Collection):
        return server.generator  # one for the process: the LLM settings are the server's

    def llm_message(exc: Exception) -> str:
        """What a client learns of an LLM failure: the kind, never the endpoint's address or reply."""
        log.warning("LLM call failed: %s", exc)
        if "timed out" in str(exc).lower() or "timeout" in type(exc.__cause__ or exc).__name__.lower():
            return f"the language model did not answer within {server.settings.serve.llm_timeout_s:g} s (timed out)"
        return "the language model is unavailable; the error is in the server's log"

    def finish_answer(col: Collection, answer: Answer) -> Answer:
        from ragline.generate.citations import pinpoint

        with col.rw.read():
            return pinpoint(answer, col.store)

    @app.post("/v1/tenants/{tenant}/collections/{collection}/ask", tags=["search"])
    def ask(body: AskIn, col: Collection = Depends(collection_of), who: Caller = Depends(reader)):
        from ragline.generate.llm import LLMError

        key = (who.principals, body.question.strip(), body.k, body.mode, body.filter)
        version = col.write_version  # read before retrieval: a write after it makes this answer stale
        cached = col.answers.get(key)
        if not body.stream:
            if cached is not None:
                return {**cached, "cached": True}
            hits = search(col, who, body.question, body.k, body.mode, body.filter, False)
            try:
                answer = generator(col).answer(body.question, hits)
            except LLMError as exc:
                raise ApiError(502, "llm_unavailable", llm_message(exc)) from None
            out = answer_json(col, body.question, finish_answer(col, answer))
            col.answers.put(key, out, version)
            return {**out, "cached": False}

        hits = None if cached is not None else search(col, who, body.question, body.k, body.mode, body.filter, False)

        def events():
            if cached is not None:
                yield {"event": "token", "data": json.dumps({"text": cached["answer"]})}
                yield {"event": "answer", "data": json.dumps({**cached, "cached": True})}
                yield {"event": "done", "data": "{}"}
                return
            gen = generator(col)
            try:
                answer = None
                if hasattr(gen, "stream"):
                    for item in gen.stream(body.question, hits):
                        if isinstance(item, Answer):
                            answer = item
                        else:
                            yield {"event": "token", "data": json.dumps({"text": item})}
                else:
                    answer = gen.answer(body.question, hits)
                    yield {"event": "token", "data": json.dumps({"text": answer.text})}
                assert answer is not None
                out = answer_json(col, body.question, finish_answer(col, answer))
                col.answers.put(key, out, version)
                yield {"event": "answer", "data": json.dumps({**out, "cached": False})}
                yield {"event": "done", "data": "{}"}
            except LLMError as exc:
                yield {"event": "error", "data": json.dumps({"code": "llm_unavailable", "message": llm_message(exc)})}
            except Exception:
                log.exception("ask stream failed")
                yield {"event": "error", "data": json.dumps({"code": "internal", "message": "the answer failed; "
                                                                     "the error is in the server's log"})}

        return EventSourceResponse(events(), ping=15)

    # -- evaluations ---------------------------------------------------------------------------
    # A run answers and judges QA items as the caller (its principals apply to every retrieval);
    # its result holds answers and sources, so only a caller with the same principals (or the
    # unrestricted admin) may read it back.
    def eval_dir(col: Collection) -> Path:
        return col.root / "evaluations"

    def eval_visible(who: Caller, result: dict) -> bool:
        return who.principals is None or result.get("principals") == list(who.principals)

    @app.post("/v1/tenants/{tenant}/collections/{collection}/evaluations", status_code=202, tags=["evaluations"])
    def create_evaluation(body: EvalIn, col: Collection = Depends(collection_of),
                          who: Caller = Depends(reader)) -> dict:
        from ragline.evaluate.beir import DatasetError
        from ragline.evaluate.qa import _item

        ready()
        try:
            items = [_item(obj, f"items[{i}]") for i, obj in enumerate(body.items)]
        except DatasetError as exc:
            raise ApiError(400, "invalid_dataset", str(exc)) from None
        job = Job(id="", tenant=col.tenant, collection=col.name, kind="evaluation", files=[], owner=who.owner)

        def work(job: Job) -> None:
            from ragline.evaluate.answers import evaluate_answers
            from ragline.evaluate.judge import OfflineJudge

            scoped = _ScopedRetriever(col, who.principals)
            version = col.write_version  # a write during the run may delete what it cites

            def progress(n: int) -> None:
                job.done = n

            def until_cancelled():  # a cancel stops the run between items; the answered ones are kept
                for it in items:
                    if job.stopping():
                        return
                    yield it

            result = evaluate_answers(until_cancelled(), scoped, generator(col),  # type: ignore[arg-type]
                                      OfflineJudge(server.embedder), k=body.k, mode=body.mode, progress=progress)
            if not result.items:  # cancelled before its first item: nothing to keep
                return
            data = {"id": job.id, "created": time.time(), "cancelled": job.stopped_early,
                    "judge": result.judge, "k": result.k, "mode": result.mode,
                    "principals": None if who.principals is None else list(who.principals),
                    "counts": result.counts, "answers": result.metrics, "retrieval": result.retrieval,
                    "latency_ms": result.latency_ms, "items": [r.as_dict() for r in result.items]}
            for item in data["items"]:
                item["sources"] = [col.display(x) for x in item.get("sources", [])]
                item["ranked_documents"] = [col.display(x) for x in item.get("ranked_documents", [])]
            cited = {name for it in data["items"] for name in [*it.get("sources", []), *it.get("ranked_documents", [])]}
            gone = col.save_result(eval_dir(col) / f"{job.id}.json", data, version, who.acl_where, cited)
            if gone:  # a result quoting a deleted (or no longer readable) document is never kept
                job.status = "failed"
                job.errors.append({"file": None, "reason": f"{len(gone)} document(s) it cites were deleted "
                                                           "or re-permissioned during the run; run it again"})
                return
            job.documents = []
            job.report = {"evaluation": job.id}

        job.files = [it.id for it in items]
        submitted = queue_job(job, work)
        return {"job": submitted.public(), "evaluation": submitted.id}

    def eval_results(col: Collection, who: Caller) -> list[dict]:
        out = []
        folder = eval_dir(col)
        for path in sorted(folder.glob("*.json")) if folder.exists() else []:
            try:
                data = json.loads(path.read_text("utf-8"))
            except (OSError, ValueError):
                continue
            if eval_visible(who, data):
                out.append(data)
        return sorted(out, key=lambda d: d.get("created", 0), reverse=True)

    @app.get("/v1/tenants/{tenant}/collections/{collection}/evaluations", tags=["evaluations"])
    def list_evaluations(col: Collection = Depends(collection_of), who: Caller = Depends(reader)) -> dict:
        keep = ("id", "created", "cancelled", "judge", "k", "mode", "counts", "answers", "retrieval", "latency_ms")
        return {"evaluations": [{k: d.get(k) for k in keep} for d in eval_results(col, who)]}

    @app.get("/v1/tenants/{tenant}/collections/{collection}/evaluations/{eval_id}", tags=["evaluations"])
    def get_evaluation(eval_id: str, col: Collection = Depends(collection_of), who: Caller = Depends(reader)) -> dict:
        found = eval_results(col, who)
        if eval_id == "latest" and found:
            return found[0]
        for d in found:
            if d.get("id") == eval_id:
                return d
        raise ApiError(404, "not_found", f"no evaluation '{eval_id}'")

    # -- the web UI --------------------------------------------------------------------------
    @app.middleware("http")
    async def ui_headers(request: Request, call_next):
        response = await call_next(request)
        if request.url.path == "/" or request.url.path.startswith("/ui/"):
            # the UI runs no inline script and loads nothing from elsewhere; and after an upgrade
            # browsers must not keep old modules
            response.headers["Content-Security-Policy"] = "default-src 'self'; img-src 'self' data:"
            response.headers["Cache-Control"] = "no-cache"
            response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    if UI_DIR.is_dir():
        app.mount("/ui", StaticFiles(directory=UI_DIR), name="ui")

        @app.get("/", include_in_schema=False)
        def index() -> FileResponse:
            return FileResponse(UI_DIR / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> dict:
        return {"openapi": "/openapi.json", "message": "the API is described by its OpenAPI document at "
                "/openapi.json; open it in any OpenAPI viewer (no interactive docs are served)"}

    app.add_middleware(SecurityHeaders)  # last, so outermost: every response, the 401s and 413s too
    return app


class _ScopedRetriever:
    """A collection's retriever as seen by one caller: every request carries its principals."""

    def __init__(self, col: Collection, principals: tuple[str, ...] | None) -> None:
        self.col, self.principals = col, principals
        self.settings = col.retriever.settings

    def request(self, text: str, **overrides):
        from dataclasses import replace

        return replace(self.col.retriever.request(text, **overrides), principals=self.principals)

    def search(self, req):
        return self.col.search(req)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ragline")
    except PackageNotFoundError:
        return "0"
