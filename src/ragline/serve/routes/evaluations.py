"""Evaluation runs over a collection. A run answers and judges QA items as the caller (its
principals apply to every retrieval); its result holds answers and sources, so only a caller
with the same principals (or the unrestricted admin) may read it back."""

from __future__ import annotations

import json
import time

from fastapi import APIRouter, Depends

from ragline.serve.collections import Collection
from ragline.serve.deps import Caller, collection_of, eval_dir, flow, queue_job, reader, ready, server_of
from ragline.serve.errors import ApiError
from ragline.serve.jobs import Job
from ragline.serve.schemas import EvalIn
from ragline.serve.server import Server

router = APIRouter()


def rebuild_evaluation(server: Server, job: Job, spec: dict):
    """The work of a saved evaluation job (another process's, or one from before a restart)."""
    return evaluation_work(server, server.collection(job.tenant, job.collection), spec), None


def evaluation_work(server: Server, col: Collection, spec: dict):
    """The run of an evaluation job, from what the request said (durable: serve/jobstore.py).
    It answers as the caller: ``spec["principals"]`` apply to every retrieval."""
    from ragline.acl import visible_to
    from ragline.evaluate.qa import _item

    items = [_item(obj, f"items[{i}]") for i, obj in enumerate(spec["items"])]
    principals = None if spec["principals"] is None else tuple(spec["principals"])
    scope = None if principals is None else visible_to(principals)

    def work(job: Job) -> None:
        from ragline.evaluate.answers import evaluate_answers
        from ragline.evaluate.judge import OfflineJudge

        version = col.write_version  # a write during the run may delete what it cites

        def progress(n: int) -> None:
            job.done = n

        def until_cancelled():  # a cancel stops the run between items; the answered ones are kept
            for it in items:
                if job.stopping():
                    return
                yield it

        result = evaluate_answers(until_cancelled(), flow(server, col), OfflineJudge(server.embedder),  # type: ignore[arg-type]
                                  k=spec["k"], mode=spec["mode"], progress=progress, principals=principals)
        if not result.items:  # cancelled before its first item: nothing to keep
            return
        data = {"id": job.id, "created": time.time(), "cancelled": job.stopped_early,
                "judge": result.judge, "k": result.k, "mode": result.mode,
                "principals": None if principals is None else list(principals),
                "counts": result.counts, "answers": result.metrics, "retrieval": result.retrieval,
                "latency_ms": result.latency_ms, "items": [r.as_dict() for r in result.items]}
        for item in data["items"]:
            item["sources"] = [col.display(x) for x in item.get("sources", [])]
            item["ranked_documents"] = [col.display(x) for x in item.get("ranked_documents", [])]
        cited = {name for it in data["items"] for name in [*it.get("sources", []), *it.get("ranked_documents", [])]}
        gone = col.save_result(eval_dir(col) / f"{job.id}.json", data, version, scope, cited)
        if gone:  # a result quoting a deleted (or no longer readable) document is never kept
            job.status = "failed"
            job.errors.append({"file": None, "reason": f"{len(gone)} document(s) it cites were deleted "
                                                       "or re-permissioned during the run; run it again"})
            return
        job.documents = []
        job.report = {"evaluation": job.id}

    return work


def eval_visible(who: Caller, result: dict) -> bool:
    return who.principals is None or result.get("principals") == list(who.principals)


@router.post("/v1/tenants/{tenant}/collections/{collection}/evaluations", status_code=202, tags=["evaluations"])
def create_evaluation(body: EvalIn, col: Collection = Depends(collection_of),
                      who: Caller = Depends(reader), server: Server = Depends(server_of)) -> dict:
    from ragline.evaluate.beir import DatasetError
    from ragline.evaluate.qa import _item

    ready(server)
    try:
        items = [_item(obj, f"items[{i}]") for i, obj in enumerate(body.items)]
    except DatasetError as exc:
        raise ApiError(400, "invalid_dataset", str(exc)) from None
    job = Job(id="", tenant=col.tenant, collection=col.name, kind="evaluation", files=[], owner=who.owner)
    spec = {"items": body.items, "k": body.k, "mode": body.mode,
            "principals": None if who.principals is None else list(who.principals)}
    work = evaluation_work(server, col, spec)
    job.files = [it.id for it in items]
    submitted = queue_job(server, job, work, None, spec)
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


@router.get("/v1/tenants/{tenant}/collections/{collection}/evaluations", tags=["evaluations"])
def list_evaluations(col: Collection = Depends(collection_of), who: Caller = Depends(reader)) -> dict:
    keep = ("id", "created", "cancelled", "judge", "k", "mode", "counts", "answers", "retrieval", "latency_ms")
    return {"evaluations": [{k: d.get(k) for k in keep} for d in eval_results(col, who)]}


@router.get("/v1/tenants/{tenant}/collections/{collection}/evaluations/{eval_id}", tags=["evaluations"])
def get_evaluation(eval_id: str, col: Collection = Depends(collection_of), who: Caller = Depends(reader)) -> dict:
    found = eval_results(col, who)
    if eval_id == "latest" and found:
        return found[0]
    for d in found:
        if d.get("id") == eval_id:
            return d
    raise ApiError(404, "not_found", f"no evaluation '{eval_id}'")
