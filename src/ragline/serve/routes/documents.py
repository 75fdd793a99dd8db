"""Documents in a collection: upload (multipart), register server-side paths (admin), list, read,
re-ingest and delete. Indexing runs as a job (routes/jobs.py); a caller only ever creates,
replaces, sees or removes documents its principals may read."""

from __future__ import annotations

import json
import os
import secrets
import shutil
from pathlib import Path

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from starlette.concurrency import run_in_threadpool

from ragline.ingest.parsers import SUPPORTED_EXTENSIONS
from ragline.ingest.sync import doc_id_for
from ragline.acl import EVERYONE, WRITER_ROLE, ACLError, parse_list, principals as valid_principals
from ragline.serve.collections import Collection, registered_files, safe_filename
from ragline.serve.deps import Caller, collection_of, eval_dir, queue_job, reader, ready, server_of, tenant_caller
from ragline.serve.errors import ApiError
from ragline.serve.jobs import Job, JobCancelled, JobLimitError
from ragline.serve.schemas import RegisterIn, doc_json
from ragline.serve.server import Server
from ragline.store.base import DocRecord

router = APIRouter()

# (the staged upload, or None for a file already in place; its final path; its display name)
Staged = tuple[Path | None, Path, str]


# --------------------------------------------------------------------------- indexing jobs
def ingest_job(server: Server, col: Collection, who: Caller, kind: str, staged: list[Staged],
               acl: tuple[str, ...] | None, rejected: list[dict]) -> Job:
    """Queue the indexing of files: (staged upload or None, final path, display name). The job is
    durable (serve/jobstore.py): its spec names the staged files and the ACL."""
    job = Job(id="", tenant=col.tenant, collection=col.name, kind=kind, owner=who.owner,
              files=[name for _, _, name in staged] + [r["file"] for r in rejected])
    job.errors.extend(rejected)
    job.done = len(rejected)
    work, discard = ingest_work(server, col, staged, acl)
    spec = {"staged": [[str(t) if t is not None else None, str(f), n] for t, f, n in staged],
            "acl": list(acl) if acl is not None else None}
    return queue_job(server, job, work, discard, spec)


def rebuild_ingest(server: Server, job: Job, spec: dict):
    """The work of a saved ingest job (another process's, or one from before a restart)."""
    col = server.collection(job.tenant, job.collection)
    staged = [(Path(t) if t else None, Path(f), n) for t, f, n in spec["staged"]]
    return ingest_work(server, col, staged, tuple(spec["acl"]) if spec["acl"] is not None else None)


def ingest_work(server: Server, col: Collection, staged: list[Staged], acl: tuple[str, ...] | None):
    """(work, discard) for indexing staged files. The work may run again after a process died
    mid-job: a staged file already moved into place is taken from there, and the sync skips what
    was indexed already."""

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
                if tmp is not None and tmp.exists():
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

    return work, discard


def stop_ingest(col: Collection, job: Job, staged: list[Staged]) -> None:
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


def job_room(server: Server, tenant: str) -> None:
    """429 before an upload is staged when the tenant has serve.max_jobs_per_tenant jobs already."""
    try:
        server.jobs.admit(tenant)
    except JobLimitError as exc:
        raise ApiError(429, "too_many_jobs", str(exc), {"Retry-After": "5"}) from None


# --------------------------------------------------------------------------- who may write what
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
    if col.document(doc_id, None) is not None and col.document(doc_id, who.scope) is None:
        raise ApiError(403, "forbidden", f"a document named '{col.display(str(final))}' exists and this key "
                                         "may not replace it")


def visible_document(col: Collection, who: Caller, doc_id: str) -> DocRecord:
    rec = col.document(doc_id, who.scope)
    if rec is None:  # absent and forbidden look the same
        raise ApiError(404, "not_found", f"no document '{doc_id}'")
    return rec


# --------------------------------------------------------------------------- routes
@router.post("/v1/tenants/{tenant}/collections/{collection}/documents", status_code=202, tags=["documents"])
async def upload_documents(request: Request, tenant: str, collection: str,
                           files: list[UploadFile] = File(..., description="one or more files"),
                           acl: str | None = Form(None, description="comma-separated principals; default '*'"),
                           who: Caller = Depends(tenant_caller)) -> dict:
    server: Server = request.app.state.server
    col = server.collection(tenant, collection)
    ready(server)
    job_room(server, tenant)
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
    job = ingest_job(server, col, who, "ingest", staged, acl_t, rejected)
    return {"job": job.public()}


@router.post("/v1/tenants/{tenant}/collections/{collection}/documents/register", status_code=202, tags=["documents"])
def register_paths(tenant: str, collection: str, body: RegisterIn, who: Caller = Depends(tenant_caller),
                   server: Server = Depends(server_of)) -> dict:
    if not who.admin:
        raise ApiError(403, "forbidden", "registering server-side paths needs the admin key")
    col = server.collection(tenant, collection)
    ready(server)
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
    return {"job": ingest_job(server, col, who, "ingest", staged, acl_t, rejected).public()}


@router.get("/v1/tenants/{tenant}/collections/{collection}/documents", tags=["documents"])
def list_documents(col: Collection = Depends(collection_of), who: Caller = Depends(tenant_caller)) -> dict:
    return {"documents": [doc_json(col, r) for r in col.documents(who.scope)]}


@router.get("/v1/tenants/{tenant}/collections/{collection}/documents/{doc_id}", tags=["documents"])
def get_document(doc_id: str, text: bool = False, col: Collection = Depends(collection_of),
                 who: Caller = Depends(tenant_caller)) -> dict:
    if text:
        reader(who)  # the text is document content: the admin must ask to read it
    return doc_json(col, visible_document(col, who, doc_id), text=text)


@router.post("/v1/tenants/{tenant}/collections/{collection}/documents/{doc_id}/reingest", status_code=202,
             tags=["documents"])
def reingest(doc_id: str, col: Collection = Depends(collection_of), who: Caller = Depends(tenant_caller),
             server: Server = Depends(server_of)) -> dict:
    ready(server)
    rec = visible_document(col, who, doc_id)
    job = ingest_job(server, col, who, "reingest", [(None, Path(rec.source), col.display(rec.source))], None, [])
    return {"job": job.public()}


@router.delete("/v1/tenants/{tenant}/collections/{collection}/documents/{doc_id}", tags=["documents"])
def delete_document(doc_id: str, col: Collection = Depends(collection_of), who: Caller = Depends(tenant_caller),
                    server: Server = Depends(server_of)) -> dict:
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
