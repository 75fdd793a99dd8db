"""Concurrent load on a real `ragline serve` process: query and ask under live ingestion, then
a correctness check of every acknowledged document and of document ACLs.

Loopback only, bounded in time. The script starts its own server (`python -m ragline.cli serve`)
in a temporary home with the per-key rate limits raised, creates a tenant, a collection and two
tenant keys (A: user:alice + group:eng; B: user:bob), uploads a base corpus (the first N SciFact
abstracts as .txt files, every --acl-every'th upload readable by group:eng only; without
../shared/datasets/scifact, paragraphs of examples/corpus), and then, for --duration seconds:

  * --concurrency client threads (httpx, closed loop, no think time) send `query` (hybrid, k=10)
    and `ask` (k=5) requests, --ask-ratio of them asks, each with key A or B at random;
    questions are SciFact's queries (or generated from the corpus);
  * one ingestion thread uploads new documents in batches of --batch (every --acl-every'th
    batch with acl=group:eng), polls each job to its end, and then checks, with one sparse query
    for their marker words, that the batch's documents are searchable at once and that
    --older-sample documents indexed earlier still are.

Every document carries a unique marker word. At the end the script checks that EVERY document
acknowledged with 202 is in the document list and is found by a sparse query for its marker,
with a key allowed to see it; that key B's document list holds no group:eng document and its
marker queries find none; and that no hit or citation key B received during the run named a
group:eng document.

It prints a table (per-endpoint req/s and latency p50/p95/p99 in ms, errors by status/code,
ingestion docs/s during load, the checks) and writes JSON (default
bench/results/serve-load-<date>.json). Exit status 1 when any request failed, any job did not
succeed, any acknowledged document was missing (at the end, or from a check after a job), or
anything leaked across the ACL; wall-clock numbers are reported, never asserted. A hard
--deadline stops everything (exit 3). On failure the server's home (with server.log) is kept.

    .venv/bin/python bench/serve_load.py                         # defaults: about 2 minutes
    .venv/bin/python bench/serve_load.py --duration 20 --base-docs 100 --output /tmp/load.json
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import datetime as dt  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Sequence  # noqa: E402

import httpx  # noqa: E402
import psutil  # noqa: E402
from machine import cpu_model, version  # noqa: E402  (bench/machine.py)

REPO = Path(__file__).resolve().parent.parent
ADMIN_KEY = "rl_admin_bench-serve-load"
TENANT, COLLECTION = "bench", "load"
ACL_GROUP = "group:eng"
KEY_A_PRINCIPALS = ["user:alice", ACL_GROUP]  # sees everything
KEY_B_PRINCIPALS = ["user:bob"]  # sees only the documents open to everyone
ENDPOINTS = ("query", "ask", "upload", "job", "visible", "check")
MB = 2**20


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def pct(values: Sequence[float], q: float) -> float:
    from ragline.evaluate.metrics import percentile

    return percentile(values, q)


def marker(kind: str, i: int) -> str:
    """A word that occurs in exactly one document (letters and digits: one token, stemmed alike)."""
    return f"zq{kind}{i:05d}mark"


# ------------------------------------------------------------------------------------ material
@dataclass
class Material:
    source: str  # what the texts came from
    base: list[tuple[str, str]]  # (title, text) for the pre-loaded corpus
    extra: list[tuple[str, str]]  # texts for documents uploaded during the load (cycled)
    questions: list[str]


def load_material(dataset: Path, base_docs: int, seed: int) -> Material:
    corpus, queries = dataset / "corpus.jsonl", dataset / "queries.jsonl"
    if corpus.is_file():
        docs: list[tuple[str, str]] = []
        with corpus.open(encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    d = json.loads(line)
                    docs.append((d.get("title") or "", d.get("text") or ""))
        questions = []
        if queries.is_file():
            with queries.open(encoding="utf-8") as f:
                questions = [json.loads(line)["text"] for line in f if line.strip()]
        base, extra = docs[:base_docs], docs[base_docs:] or docs
        if not questions:
            questions = generated_questions(base, seed)
        return Material(f"BEIR {dataset.name} ({corpus})", base, extra, questions)
    # fallback: paragraphs of the example corpus's text files
    paras: list[tuple[str, str]] = []
    for path in sorted((REPO / "examples" / "corpus").glob("*")):
        if path.suffix.lower() in (".txt", ".md"):
            for p in re.split(r"\n\s*\n", path.read_text("utf-8")):
                p = " ".join(p.replace("#", " ").split())
                if len(p) >= 60:
                    paras.append((path.stem, p))
    if not paras:
        raise SystemExit("no material: neither a BEIR corpus.jsonl nor text files in examples/corpus")
    base = [paras[i % len(paras)] for i in range(base_docs)]
    return Material("examples/corpus paragraphs (SciFact not found)", base, paras, generated_questions(paras, seed))


def generated_questions(docs: list[tuple[str, str]], seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for title, text in docs:
        words = re.findall(r"[A-Za-z][A-Za-z\-]+", text)
        if len(words) >= 6:
            start = rng.randrange(0, max(1, len(words) - 6))
            out.append("What is known about " + " ".join(words[start : start + 6]) + "?")
    return out or ["What is this collection about?"]


def doc_body(title: str, text: str, mark: str) -> str:
    head = f"{title}\n\n" if title else ""
    return f"{head}{text}\n\nReference tag: {mark}.\n"


# ------------------------------------------------------------------------------------ server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: Path, ready_timeout: float, started: list) -> tuple[subprocess.Popen, str, Path]:
    """Start the server; its process goes into ``started`` at once (the deadline's watchdog kills it)."""
    port = free_port()
    env = {**os.environ, "RAGLINE_SERVE__ADMIN_KEY": ADMIN_KEY,
           "RAGLINE_SERVE__RATE_LIMIT_PER_MINUTE": "10000000", "RAGLINE_SERVE__RATE_LIMIT_BURST": "1000000"}
    env.pop("RAGLINE_HOME", None)
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "server.log"
    proc = subprocess.Popen([sys.executable, "-m", "ragline.cli", "serve", "--home", str(home), "--port", str(port)],
                            env=env, stdout=log_path.open("w"), stderr=subprocess.STDOUT, cwd=str(REPO))
    started.append(proc)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("ragline serve exited:\n" + log_path.read_text())
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return proc, url, log_path
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("ragline serve did not become ready:\n" + log_path.read_text())


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class RssSampler:
    """Samples the server process's RSS (its own process; no children are expected)."""

    def __init__(self, pid: int, interval_s: float = 0.5) -> None:
        self.proc = psutil.Process(pid)
        self.interval = interval_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append(self.proc.memory_info().rss)
            except psutil.Error:
                return
            self._stop.wait(self.interval)

    def start(self) -> "RssSampler":
        self._thread.start()
        return self

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join(2)
        s = self.samples
        return {"start_mb": round(s[0] / MB, 1) if s else None, "end_mb": round(s[-1] / MB, 1) if s else None,
                "peak_mb": round(max(s) / MB, 1) if s else None, "samples": len(s)}


# ------------------------------------------------------------------------------------ recording
@dataclass
class Failure:
    endpoint: str
    status: str  # HTTP status or the exception's type
    code: str
    detail: str
    at: float  # seconds since the load started
    request: str  # method, path and JSON body (or the uploaded names)
    thread: str  # the client thread (each holds one keep-alive connection pool per key)


@dataclass
class Recorder:
    t0: float = 0.0
    lat: defaultdict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    lat_by_key: dict[str, list[float]] = field(default_factory=dict)  # "query/A" -> ms
    ok: Counter = field(default_factory=Counter)
    failures: list[Failure] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    b_sources: set[str] = field(default_factory=set)  # every source key B saw in a hit or citation
    a_acl_hits: int = 0  # hits/citations of group:eng documents key A received (the leak check's control)
    a_results: int = 0
    b_results: int = 0
    asks_cached: int = 0
    generators: Counter = field(default_factory=Counter)
    empty_results: Counter = field(default_factory=Counter)

    def call(self, endpoint: str, fn, *, expect: tuple[int, ...] = (200,), key: str | None = None,
             what: str = ""):
        """Run one request, time it, and record it as ok or as a failure (with ``what`` it was);
        returns the response or None."""
        t = time.perf_counter()
        try:
            r = fn()
        except httpx.HTTPError as exc:
            ms = (time.perf_counter() - t) * 1000
            self._fail(endpoint, type(exc).__name__, "", str(exc)[:300], what)
            return None
        ms = (time.perf_counter() - t) * 1000
        if r.status_code in expect:
            with self.lock:
                self.lat[endpoint].append(ms)
                if key:
                    self.lat_by_key.setdefault(f"{endpoint}/{key}", []).append(ms)
                self.ok[endpoint] += 1
            return r
        try:
            code = r.json().get("error", {}).get("code", "")
        except ValueError:
            code = ""
        self._fail(endpoint, str(r.status_code), code, r.text[:300], what)
        return None

    def _fail(self, endpoint: str, status: str, code: str, detail: str, what: str) -> None:
        with self.lock:
            self.failures.append(Failure(endpoint, status, code, detail, round(time.perf_counter() - self.t0, 2),
                                         what[:500], threading.current_thread().name))
        log(f"FAILED {endpoint}: {status} {code} {detail[:160]} <- {what[:200]}")


def sources_of(endpoint: str, body: dict) -> list[str]:
    if endpoint == "query":
        return [h["source"] for h in body.get("hits", [])]
    return [c["source"] for c in body.get("citations", [])]


# ------------------------------------------------------------------------------------ the run
@dataclass
class Doc:
    name: str
    mark: str
    acl: bool  # True: readable by group:eng only
    phase: str  # "base" | "load"
    job: str = ""
    job_status: str = ""


class Bench:
    def __init__(self, args: argparse.Namespace, url: str, key_a: str, key_b: str, material: Material) -> None:
        self.args, self.url, self.material = args, url, material
        self.keys = {"A": key_a, "B": key_b}
        self.rec = Recorder()
        self.docs: list[Doc] = []  # every document acknowledged with 202
        self.docs_lock = threading.Lock()
        self.col = f"/v1/tenants/{TENANT}/collections/{COLLECTION}"
        self.hard_deadline = 0.0
        self.ingest: dict = {"batches": 0, "docs_acked": 0, "docs_indexed": 0, "jobs_failed": [],
                             "job_seconds": [], "visible_at_once_missed": [], "first_upload": None,
                             "older_checked": 0, "older_missed": [],
                             "last_finished": None, "docs_indexed_in_window": 0}

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {self.keys[key]}"},
                            timeout=self.args.request_timeout)

    # -- uploads -------------------------------------------------------------------------------
    def upload(self, client: httpx.Client, docs: list[tuple[Doc, str]], endpoint: str = "upload") -> str | None:
        parts = [("files", (d.name, body.encode("utf-8"), "text/plain")) for d, body in docs]
        acl = docs[0][0].acl
        r = self.rec.call(endpoint, lambda: client.post(f"{self.col}/documents", files=parts,
                                                        data={"acl": ACL_GROUP} if acl else None), expect=(202,),
                          what=f"POST {self.col}/documents acl={ACL_GROUP if acl else '-'} "
                               + ",".join(d.name for d, _ in docs))
        if r is None:
            return None
        job = r.json()["job"]["id"]
        with self.docs_lock:
            for d, _ in docs:
                d.job = job
                self.docs.append(d)
        return job

    def wait_job(self, client: httpx.Client, job: str, endpoint: str = "job") -> dict | None:
        while time.monotonic() < self.hard_deadline:
            r = self.rec.call(endpoint, lambda: client.get(f"{self.col}/jobs/{job}"), what=f"GET {self.col}/jobs/{job}")
            if r is None:
                time.sleep(self.args.poll_s)
                continue
            body = r.json()
            if body["status"] not in ("queued", "running"):
                return body
            time.sleep(self.args.poll_s)
        return None

    def preload(self) -> dict:
        """Upload the base corpus 50 files per request (every --acl-every'th upload ACL'd) and wait."""
        t = time.perf_counter()
        jobs = []
        with self.client("A") as c:
            per = 50
            for n, start in enumerate(range(0, len(self.material.base), per)):
                acl = n % self.args.acl_every == self.args.acl_every - 1
                batch = []
                for i in range(start, min(start + per, len(self.material.base))):
                    title, text = self.material.base[i]
                    d = Doc(f"base-{i:05d}.txt", marker("b", i), acl, "base")
                    batch.append((d, doc_body(title, text, d.mark)))
                job = self.upload(c, batch, endpoint="preload")
                if job is None:
                    raise SystemExit("the base corpus upload failed; see the failures above")
                jobs.append(job)
            failed = []
            for job in jobs:
                res = self.wait_job(c, job, endpoint="preload")
                if res is None:
                    raise SystemExit("the base corpus did not finish ingesting before the deadline")
                self.set_job_status(job, res["status"])
                if res["status"] != "succeeded":
                    failed.append({"job": job, "status": res["status"], "errors": res["errors"]})
        secs = time.perf_counter() - t
        n_docs = len(self.material.base)
        log(f"base corpus: {n_docs} documents in {secs:.1f} s ({n_docs / secs:.1f} docs/s, no queries meanwhile)")
        return {"documents": n_docs, "acl_documents": sum(d.acl for d in self.docs), "seconds": round(secs, 2),
                "docs_per_s": round(n_docs / secs, 2), "jobs": len(jobs), "jobs_not_succeeded": failed}

    def set_job_status(self, job: str, status: str) -> None:
        with self.docs_lock:
            for d in self.docs:
                if d.job == job:
                    d.job_status = status

    # -- load ----------------------------------------------------------------------------------
    def warm_up(self) -> None:
        """A few untimed queries and asks per key: first-call costs stay out of the numbers."""
        qs = self.material.questions
        for key in ("A", "B"):
            with self.client(key) as c:
                for q in qs[:3]:
                    c.post(f"{self.col}/query", json={"query": q, "k": 10})
                    c.post(f"{self.col}/ask", json={"question": q, "k": 5})

    def client_loop(self, idx: int, stop_at: float) -> None:
        rng = random.Random(self.args.seed * 1000 + idx)
        clients = {k: self.client(k) for k in self.keys}
        qs = self.material.questions
        try:
            while time.monotonic() < stop_at:
                key = rng.choice(("A", "B"))
                q = rng.choice(qs)
                if rng.random() < self.args.ask_ratio:
                    ep, path, body = "ask", f"{self.col}/ask", {"question": q, "k": 5}
                else:
                    ep, path, body = "query", f"{self.col}/query", {"query": q, "k": 10}
                r = self.rec.call(ep, lambda: clients[key].post(path, json=body), key=key,
                                  what=f"POST {path} key {key} {json.dumps(body)}")
                if r is None:
                    continue
                data = r.json()
                srcs = sources_of(ep, data)
                with self.rec.lock:
                    if not srcs:
                        self.rec.empty_results[ep] += 1
                    if ep == "ask":
                        self.rec.asks_cached += bool(data.get("cached"))
                        self.rec.generators[data.get("generator", "?")] += 1
                    if key == "B":
                        self.rec.b_results += 1
                        self.rec.b_sources.update(srcs)
                    else:
                        self.rec.a_results += 1
                        self.rec.a_acl_hits += sum(1 for s in srcs if s in self.acl_names_snapshot())
        finally:
            for c in clients.values():
                c.close()

    def acl_names_snapshot(self) -> set[str]:
        # names are unique and each is only ever uploaded with one ACL, so the set only grows
        return self._acl_names

    def ingest_loop(self, stop_at: float) -> None:
        args, ing = self.args, self.ingest
        extra = self.material.extra
        rng = random.Random(self.args.seed + 7)
        n = 0
        with self.client("A") as c:
            while time.monotonic() < stop_at:
                acl = ing["batches"] % args.acl_every == args.acl_every - 1
                batch = []
                for _ in range(args.batch):
                    title, text = extra[n % len(extra)]
                    d = Doc(f"load-{n:05d}.txt", marker("l", n), acl, "load")
                    batch.append((d, doc_body(title, text, d.mark)))
                    n += 1
                if acl:
                    self._acl_names = self._acl_names | {d.name for d, _ in batch}
                t = time.perf_counter()
                if ing["first_upload"] is None:
                    ing["first_upload"] = t
                job = self.upload(c, batch)
                ing["batches"] += 1
                if job is None:
                    time.sleep(args.poll_s)
                    continue
                ing["docs_acked"] += len(batch)
                res = self.wait_job(c, job)
                if res is None:
                    break  # the hard deadline
                done = time.perf_counter()
                self.set_job_status(job, res["status"])
                ing["job_seconds"].append(round(done - t, 3))
                if res["status"] != "succeeded":
                    ing["jobs_failed"].append({"job": job, "status": res["status"], "errors": res["errors"],
                                               "files": res["files"]})
                    log(f"job {job} ended {res['status']}: {res['errors']}")
                    continue
                ing["docs_indexed"] += len(batch)
                ing["last_finished"] = done
                if time.monotonic() <= stop_at:
                    ing["docs_indexed_in_window"] += len(batch)
                # read-your-writes: the batch is searchable as soon as its job has succeeded, and
                # documents indexed earlier still are (a sample of them)
                mine = {d.name for d, _ in batch}
                with self.docs_lock:
                    earlier = [d for d in self.docs if d.job_status == "succeeded" and d.name not in mine]
                older = rng.sample(earlier, min(args.older_sample, len(earlier)))
                q = " ".join([d.mark for d, _ in batch] + [d.mark for d in older])
                k = min(100, max(10, 2 * (len(batch) + len(older))))
                r = self.rec.call("visible", lambda: c.post(f"{self.col}/query",
                                                            json={"query": q, "k": k, "mode": "sparse"}),
                                  what=f"POST {self.col}/query sparse {q}")
                if r is not None:
                    seen = {h["source"] for h in r.json()["hits"]}
                    missed = [d.name for d, _ in batch if d.name not in seen]
                    if missed:
                        ing["visible_at_once_missed"].extend(missed)
                        log(f"not searchable right after job {job} succeeded: {missed}")
                    gone = [d.name for d in older if d.name not in seen]
                    ing["older_checked"] += len(older)
                    if gone:
                        ing["older_missed"].append({"after_job": job, "at": round(done - self.rec.t0, 2),
                                                    "missing": gone})
                        log(f"earlier documents not found after job {job}: {gone}")

    def run_load(self) -> dict:
        args = self.args
        self._acl_names = {d.name for d in self.docs if d.acl}
        self.warm_up()
        self.rec = Recorder()  # warm-up and preload requests are not counted
        start = time.monotonic()
        stop_at = start + args.duration
        self.rec.t0 = time.perf_counter()
        threads = [threading.Thread(target=self.client_loop, args=(i, stop_at), name=f"client-{i}", daemon=True)
                   for i in range(args.concurrency)]
        ing = threading.Thread(target=self.ingest_loop, args=(stop_at,), name="ingest", daemon=True)
        load0 = os.getloadavg()
        for t in [*threads, ing]:
            t.start()
        for t in threads:
            t.join(max(0.0, self.hard_deadline - time.monotonic()))
        client_secs = time.monotonic() - start
        ing.join(max(0.0, self.hard_deadline - time.monotonic()))  # its last job may run past the window
        if any(t.is_alive() for t in [*threads, ing]):
            raise TimeoutError("load threads still running at the hard deadline")
        total_secs = time.monotonic() - start
        rec = self.rec
        self.load_failures = len(rec.failures)  # later failures belong to the verification
        per = {}
        for ep in ENDPOINTS:
            xs = rec.lat[ep]
            fails = sum(1 for f in rec.failures if f.endpoint == ep)
            per[ep] = {"ok": len(xs), "failed": fails,
                       "req_per_s": round(len(xs) / args.duration, 2) if ep in ("query", "ask") else
                       round(len(xs) / total_secs, 2),
                       "p50_ms": round(pct(xs, 50), 1), "p95_ms": round(pct(xs, 95), 1),
                       "p99_ms": round(pct(xs, 99), 1), "max_ms": round(max(xs), 1) if xs else 0.0}
        by_key = {k: {"n": len(v), "p50_ms": round(pct(v, 50), 1), "p95_ms": round(pct(v, 95), 1)}
                  for k, v in sorted(rec.lat_by_key.items())}
        i = self.ingest
        window = (i["last_finished"] - i["first_upload"]) if i["first_upload"] and i["last_finished"] else 0.0
        return {
            "duration_s": args.duration, "client_seconds": round(client_secs, 2), "total_seconds": round(total_secs, 2),
            "loadavg_during": [round(x, 2) for x in load0],
            "endpoints": per, "by_key": by_key,
            "errors": dict(Counter(f"{f.endpoint} {f.status} {f.code}".strip() for f in rec.failures)),
            "failures": [f.__dict__ for f in rec.failures[:50]],
            "asks_cached": rec.asks_cached, "generators": dict(rec.generators),
            "empty_results": dict(rec.empty_results),
            "ingest": {
                "batches": i["batches"], "batch_size": args.batch, "docs_acked": i["docs_acked"],
                "docs_indexed": i["docs_indexed"], "docs_indexed_in_window": i["docs_indexed_in_window"],
                "docs_per_s": round(i["docs_indexed_in_window"] / args.duration, 2),
                "docs_per_s_upload_to_last_job": round(i["docs_indexed"] / window, 2) if window else 0.0,
                "batch_upload_to_done_s": {"p50": round(pct(i["job_seconds"], 50), 2),
                                           "p95": round(pct(i["job_seconds"], 95), 2),
                                           "max": round(max(i["job_seconds"]), 2) if i["job_seconds"] else 0.0},
                "jobs_not_succeeded": i["jobs_failed"],
                "not_searchable_right_after_job": i["visible_at_once_missed"],
                "earlier_docs_checked_after_jobs": i["older_checked"],
                "earlier_docs_not_found_after_jobs": i["older_missed"],
            },
            "acl_during_load": {"key_b_results": rec.b_results, "key_a_results": rec.a_results,
                                "key_a_acl_hits": rec.a_acl_hits},
        }

    # -- checks --------------------------------------------------------------------------------
    def verify(self) -> dict:
        acked = list(self.docs)
        acl_names = {d.name for d in acked if d.acl}
        out: dict = {"acknowledged": len(acked), "acl_documents": len(acl_names)}
        with self.client("A") as ca, self.client("B") as cb:
            list_a = self.rec.call("check", lambda: ca.get(f"{self.col}/documents"), what="GET documents key A")
            list_b = self.rec.call("check", lambda: cb.get(f"{self.col}/documents"), what="GET documents key B")
            names_a = {d["name"] for d in list_a.json()["documents"]} if list_a is not None else set()
            names_b = {d["name"] for d in list_b.json()["documents"]} if list_b is not None else set()
            missing_list = sorted(d.name for d in acked if d.name not in names_a)
            missing_list_b = sorted(d.name for d in acked if not d.acl and d.name not in names_b)
            acl_in_list_b = sorted(names_b & acl_names)
            not_found, b_found_acl = [], []
            ranks: Counter = Counter()
            for d in acked:
                if time.monotonic() > self.hard_deadline:
                    raise TimeoutError("verification ran into the hard deadline")
                c = ca if d.acl else cb  # a key allowed to see it (B for the open ones, to use both)
                r = self.rec.call("check", lambda: c.post(f"{self.col}/query",
                                                          json={"query": d.mark, "k": 10, "mode": "sparse"}),
                                  what=f"POST {self.col}/query sparse {d.mark}")
                srcs = [h["source"] for h in r.json()["hits"]] if r is not None else []
                if d.name in srcs:
                    ranks[srcs.index(d.name) + 1] += 1
                else:
                    not_found.append(d.name)
                if d.acl:  # the key that may not see it must not find it either
                    r = self.rec.call("check", lambda: cb.post(f"{self.col}/query",
                                                               json={"query": d.mark, "k": 10, "mode": "sparse"}),
                                      what=f"POST {self.col}/query sparse key B {d.mark}")
                    srcs = [h["source"] for h in r.json()["hits"]] if r is not None else []
                    if any(s in acl_names for s in srcs):
                        b_found_acl.append(d.name)
        leaked = sorted(self.rec.b_sources & acl_names)
        out.update({
            "documents_listed_for_a": len(names_a), "documents_listed_for_b": len(names_b),
            "missing_from_list": missing_list, "missing_from_list_b": missing_list_b,
            "not_found_by_marker": not_found, "marker_rank": dict(sorted(ranks.items())),
            "acl_docs_in_list_for_b": acl_in_list_b, "acl_docs_found_by_b_marker_query": b_found_acl,
            "acl_docs_returned_to_b_during_load": leaked,
            "jobs_not_succeeded": sorted({d.job for d in acked if d.job_status != "succeeded"}),
        })
        missing = set(missing_list) | set(not_found) | set(missing_list_b)
        out["missing"] = len(missing)
        out["leaks"] = len(set(acl_in_list_b) | set(b_found_acl) | set(leaked))
        return out


# ------------------------------------------------------------------------------------ output
def fmt_table(rows: list[tuple[str, str]], title: str) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join([title, "-" * len(title), *(f"  {k.ljust(width)}  {v}" for k, v in rows)])


def report(data: dict) -> str:
    s, env, load, ver = data["settings"], data["environment"], data["load"], data["verify"]
    parts = [
        f"ragline serve load: {s['concurrency']} clients + 1 ingester for {s['duration_s']} s, "
        f"ask ratio {s['ask_ratio']}, base corpus {data['base']['documents']} docs ({data['material']}), "
        f"{env['cpu_count']} CPUs, load avg {env['loadavg_start'][0]:.1f} -> {env['loadavg_end'][0]:.1f}",
        "",
    ]
    head = f"{'endpoint':8} {'ok':>6} {'failed':>6} {'req/s':>7} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}"
    lines = ["Requests during the load (ms; query/ask: closed-loop clients; upload/job/visible: the ingester)",
             "-" * len(head), head]
    for ep, v in load["endpoints"].items():
        if v["ok"] or v["failed"]:
            lines.append(f"{ep:8} {v['ok']:>6} {v['failed']:>6} {v['req_per_s']:>7.2f} {v['p50_ms']:>8.1f} "
                         f"{v['p95_ms']:>8.1f} {v['p99_ms']:>8.1f} {v['max_ms']:>8.1f}")
    parts += ["\n".join(lines), ""]
    ing = load["ingest"]
    rows = [
        ("base corpus, no queries", f"{data['base']['docs_per_s']:.1f} docs/s ({data['base']['documents']} docs, "
                                 f"{data['base']['seconds']:.1f} s)"),
        ("during load", f"{ing['docs_per_s']:.2f} docs/s ({ing['docs_indexed_in_window']} docs indexed in the "
                        f"{s['duration_s']} s window; batches of {ing['batch_size']})"),
        ("batch upload -> job done", f"p50 {ing['batch_upload_to_done_s']['p50']:.2f} s, "
                                     f"p95 {ing['batch_upload_to_done_s']['p95']:.2f} s"),
        ("jobs not succeeded", str(len(ing["jobs_not_succeeded"]))),
        ("not searchable right after job", str(len(ing["not_searchable_right_after_job"]))),
        ("earlier docs lost after a job", f"{sum(len(x['missing']) for x in ing['earlier_docs_not_found_after_jobs'])}"
                                          f" of {ing['earlier_docs_checked_after_jobs']} sampled "
                                          f"(after {len(ing['earlier_docs_not_found_after_jobs'])} jobs)"),
    ]
    parts += [fmt_table(rows, "Ingestion"), ""]
    errs = load["errors"]
    rows = [(k, str(v)) for k, v in sorted(errs.items())] or [("none", "0")]
    parts += [fmt_table(rows, "Errors by endpoint, status and code (expected: none)"), ""]
    if load["failures"]:
        parts += ["First failed requests (all in the JSON; the server's log has the tracebacks)"]
        parts += [f"  t={f['at']:.2f}s {f['thread']}: {f['endpoint']} {f['status']} {f['code']} <- {f['request'][:150]}"
                  for f in load["failures"][:6]] + [""]
    rows = [
        ("acknowledged documents", f"{ver['acknowledged']} ({ver['acl_documents']} readable by {ACL_GROUP} only)"),
        ("missing (list or marker query)", f"{ver['missing']}  (expected 0)"),
        ("ACL leaks to key B", f"{ver['leaks']}  (expected 0; key B got {load['acl_during_load']['key_b_results']} "
                               f"results during the load, key A {load['acl_during_load']['key_a_acl_hits']} "
                               f"hits of ACL'd documents)"),
        ("server RSS", f"{data['server_rss']['start_mb']} -> {data['server_rss']['end_mb']} MB "
                       f"(peak {data['server_rss']['peak_mb']} MB)"),
    ]
    parts += [fmt_table(rows, "Checks"), "",
              "RESULT: PASS" if data["passed"] else "RESULT: FAIL (" + "; ".join(data["failed_because"]) + ")"]
    return "\n".join(parts)


# ------------------------------------------------------------------------------------ main
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", type=Path, default=REPO / "../shared/datasets/scifact",
                   help="BEIR folder for texts and questions; absent: examples/corpus "
                        "[default: ../shared/datasets/scifact from the repository root]")
    p.add_argument("--base-docs", type=int, default=200, help="documents uploaded before the load [200]")
    p.add_argument("--concurrency", type=int, default=4, help="query/ask client threads [4]")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load [60]")
    p.add_argument("--ask-ratio", type=float, default=0.25, help="share of client requests that are asks [0.25]")
    p.add_argument("--batch", type=int, default=4, help="documents per upload during the load [4]")
    p.add_argument("--acl-every", type=int, default=3,
                   help=f"every Nth upload is readable by {ACL_GROUP} only (key A), not by key B [3]")
    p.add_argument("--older-sample", type=int, default=4,
                   help="earlier documents re-checked by marker after each ingestion job [4]")
    p.add_argument("--poll-s", type=float, default=0.2, help="job polling interval [0.2]")
    p.add_argument("--request-timeout", type=float, default=60.0, help="per-request timeout, s [60]")
    p.add_argument("--deadline", type=float, default=480.0,
                   help="hard limit on the whole run, s; past it the server is killed and the exit status is 3 [480]")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep-home", action="store_true", help="keep the server's temporary home (kept anyway on failure)")
    p.add_argument("--output", type=Path, default=None,
                   help="JSON result path [default: bench/results/serve-load-<date>.json]")
    args = p.parse_args(argv)
    for name in ("base_docs", "concurrency", "batch", "acl_every"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if not 0 <= args.ask_ratio <= 1:
        p.error("--ask-ratio must be between 0 and 1")
    if args.duration <= 0 or args.deadline <= args.duration:
        p.error("--duration must be positive and below --deadline")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    load_start = [round(x, 2) for x in os.getloadavg()]
    material = load_material(args.dataset.resolve(), args.base_docs, args.seed)
    log(f"material: {material.source}; {len(material.base)} base documents, {len(material.questions)} questions")
    home = Path(tempfile.mkdtemp(prefix="ragline-serve-load-"))
    procs: list[subprocess.Popen] = []  # the server, once started
    keep = args.keep_home

    def on_deadline() -> None:
        log(f"HARD DEADLINE of {args.deadline:.0f} s reached: killing the server; its home stays at {home}")
        for p in procs:
            if p.poll() is None:
                p.kill()
        os._exit(3)

    watchdog = threading.Timer(args.deadline, on_deadline)
    watchdog.daemon = True
    watchdog.start()
    try:
        t = time.perf_counter()
        proc, url, log_path = start_server(home, min(240.0, args.deadline), procs)
        start_s = time.perf_counter() - t
        log(f"server ready at {url} in {start_s:.1f} s (home {home})")
        rss = RssSampler(proc.pid).start()
        admin = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60)
        for path, body in (("/v1/tenants", {"name": TENANT}),
                           (f"/v1/tenants/{TENANT}/collections", {"name": COLLECTION})):
            r = admin.post(path, json=body)
            if r.status_code != 201:
                raise SystemExit(f"setup failed: POST {path}: {r.status_code} {r.text}")
        keys = []
        for name, principals in (("bench-a", KEY_A_PRINCIPALS), ("bench-b", KEY_B_PRINCIPALS)):
            r = admin.post(f"/v1/tenants/{TENANT}/keys", json={"name": name, "principals": principals})
            if r.status_code != 201:
                raise SystemExit(f"setup failed: creating a key: {r.status_code} {r.text}")
            keys.append(r.json()["key"])
        admin.close()
        bench = Bench(args, url, keys[0], keys[1], material)
        bench.hard_deadline = started + args.deadline - 5
        log(f"uploading the base corpus ({len(material.base)} documents)")
        base = bench.preload()
        preload_failures = list(bench.rec.failures)
        log(f"load: {args.concurrency} clients + 1 ingester for {args.duration:.0f} s")
        load = bench.run_load()
        log("verifying every acknowledged document")
        verify = bench.verify()
        check_failures = bench.rec.failures[bench.load_failures:]
        rss_stats = rss.stop()
        errors = sum(load["errors"].values()) + len(preload_failures) + len(check_failures)
        ing = load["ingest"]
        lost = sum(len(x["missing"]) for x in ing["earlier_docs_not_found_after_jobs"])
        reasons = [text for bad, text in (
            (errors, f"{errors} failed requests"),
            (verify["missing"], f"{verify['missing']} acknowledged documents missing at the end"),
            (verify["leaks"], f"{verify['leaks']} ACL'd documents seen by key B"),
            (len(verify["jobs_not_succeeded"]) + len(base["jobs_not_succeeded"]), "jobs that did not succeed"),
            (len(ing["not_searchable_right_after_job"]), f"{len(ing['not_searchable_right_after_job'])} documents "
                                                        "not searchable right after their job"),
            (lost, f"{lost} earlier documents not found after a later job"),
        ) if bad]
        failed = bool(reasons)
        from ragline.config import load_settings

        srv_settings = load_settings(home=home)
        data = {
            "date": dt.date.today().isoformat(),
            "passed": not failed,
            "failed_because": reasons,
            "material": material.source,
            "settings": {
                "concurrency": args.concurrency, "duration_s": args.duration, "ask_ratio": args.ask_ratio,
                "base_docs": len(material.base), "upload_batch": args.batch, "acl_every": args.acl_every,
                "older_sample": args.older_sample,
                "poll_s": args.poll_s, "request_timeout_s": args.request_timeout, "deadline_s": args.deadline,
                "seed": args.seed, "query": {"k": 10, "mode": "default (hybrid)"}, "ask": {"k": 5},
                "keys": {"A": KEY_A_PRINCIPALS, "B": KEY_B_PRINCIPALS}, "questions": len(material.questions),
                "server": {"rate_limit_per_minute": 10_000_000, "rate_limit_burst": 1_000_000,
                           "embed_model": srv_settings.embed.model, "embed_precision": srv_settings.embed.precision,
                           "embed_batch": srv_settings.embed.batch_size,
                           "llm": "extractive (no llm.base_url)" if not srv_settings.llm.base_url
                           else srv_settings.llm.base_url,
                           "retrieve": srv_settings.retrieve.model_dump(mode="json")},
            },
            "environment": {
                "cpu_count": os.cpu_count(),
                "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                "cpu_model": cpu_model(), "loadavg_start": load_start,
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
                "platform": platform.platform(), "python": platform.python_version(),
                "versions": {d: version(d) for d in ("ragline", "torch", "lancedb", "fastapi", "uvicorn", "httpx")},
                "note": "client, ingester and server share the machine's cores",
            },
            "server_start_s": round(start_s, 2),
            "server_rss": rss_stats,
            "base": base,
            "preload_failures": [f.__dict__ for f in preload_failures],
            "load": load,
            "verify": verify,
            "check_failures": [f.__dict__ for f in check_failures[:50]],
            "total_seconds": round(time.monotonic() - started, 1),
        }
        out = args.output or REPO / "bench" / "results" / f"serve-load-{data['date']}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(data, indent=1) + "\n", "utf-8")
        print(report(data))
        print(f"\nJSON: {out}")
        if failed:
            keep = True
            tail = log_path.read_text(errors="replace").splitlines()[-60:]
            log("server log (last 60 lines):\n" + "\n".join(tail))
        return 1 if failed else 0
    finally:
        watchdog.cancel()
        for p in procs:
            stop_server(p)
        if keep:
            log(f"server home kept at {home} (log: {home / 'server.log'})")
        else:
            shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
