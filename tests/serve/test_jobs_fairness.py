"""Jobs over real HTTP: one tenant's long evaluations never hold another tenant's upload behind
them, a tenant may queue only so many jobs, and jobs can be cancelled (issue 13 item 7).

Long evaluations here are cut short by a cancel once the test has what it needs, so they cost
seconds; the assertions are on the order of events and on states, never on durations."""

from __future__ import annotations

import time

import httpx
import pytest

from ragline.config import ServeSettings

pytestmark = pytest.mark.slow

KETTLE = ("# Boiling\n\nAt high altitude the air pressure is lower, so water boils at a lower temperature. "
          "A kettle on a mountain therefore reaches its boiling point sooner but cooks food more slowly.\n")
MOONS = "Mars has two small moons named Phobos and Deimos. Phobos orbits closer to Mars than Deimos does.\n"
QUESTIONS = [("Why does water boil at a lower temperature at altitude?", "the air pressure is lower"),
             ("What are the moons of Mars?", "Phobos and Deimos"),
             ("Which moon orbits closer to Mars?", "Phobos"),
             ("Does food cook faster on a mountain?", "no, more slowly")]
LONG = 300  # items in a "long" evaluation: far more than any test lets it run


def base(tenant: str, collection: str = "docs") -> str:
    return f"/v1/tenants/{tenant}/collections/{collection}"


def items(n: int) -> list[dict]:
    return [{"id": f"q{i}", "question": QUESTIONS[i % 4][0], "answer": QUESTIONS[i % 4][1]} for i in range(n)]


def evaluate(c: httpx.Client, tenant: str, n: int) -> dict:
    r = c.post(base(tenant) + "/evaluations", json={"items": items(n)})
    assert r.status_code == 202, r.text
    return r.json()["job"]


def job(c: httpx.Client, tenant: str, job_id: str) -> dict:
    r = c.get(base(tenant) + f"/jobs/{job_id}")
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(c: httpx.Client, tenant: str, job_id: str, ok, timeout: float = 300) -> dict:
    """Poll a job until ``ok(job)`` holds (the timeout only guards against a hang)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        j = job(c, tenant, job_id)
        if ok(j):
            return j
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} never reached the expected state: {j}")


def cancel(c: httpx.Client, tenant: str, job_id: str) -> httpx.Response:
    return c.post(base(tenant) + f"/jobs/{job_id}/cancel")


@pytest.fixture
def tenants(server, tenant_name):
    """Tenants A (two documents) and B (an empty collection), a key for each."""
    out = []
    for suffix in ("a", "b"):
        name = f"{tenant_name}-{suffix}"
        server.tenant(name)
        server.collection(name, "docs")
        out.append((name, server.client(server.key(name, "user:alice"))))
    (a, ca), _ = out
    assert server.upload(ca, a, "docs", {"kettle.md": KETTLE, "mars.txt": MOONS})["status"] == "succeeded"
    return out


def test_another_tenants_upload_finishes_before_a_backlog_of_long_evaluations(server, tenants):
    (a, ca), (b, cb) = tenants
    backlog = [evaluate(ca, a, LONG), evaluate(ca, a, LONG)]
    upload = server.upload(cb, b, "docs", {"saturn.txt": "Saturn has prominent rings made of ice.\n"})
    assert upload["status"] == "succeeded"
    # when B's upload is done, A's backlog is not: its second evaluation has not even started
    states = [job(ca, a, j["id"]) for j in backlog]
    assert states[0]["status"] == "running" and states[1]["status"] == "queued"
    for j in backlog:  # stop the backlog (the test has what it needs)
        assert cancel(ca, a, j["id"]).status_code in (200, 202)
    ends = [server.wait_job(ca, a, "docs", a_job["id"]) for a_job in backlog]
    assert all(e["status"] == "cancelled" for e in ends)
    assert upload["finished"] < min(e["finished"] for e in ends)
    hits = cb.post(base(b) + "/query", json={"query": "rings of Saturn", "k": 1}).json()["hits"]
    assert hits[0]["source"] == "saturn.txt"


def test_a_tenant_may_have_only_so_many_jobs_queued_or_running(server, tenants):
    (a, ca), (b, cb) = tenants
    cap = ServeSettings().max_jobs_per_tenant  # the session server runs with the default
    first = evaluate(ca, a, LONG)  # running: it holds A's evaluation lane, so the rest stay queued
    accepted = [first]
    refused = None
    for _ in range(cap + 5):
        r = ca.post(base(a) + "/evaluations", json={"items": items(1)})
        if r.status_code != 202:
            refused = r
            break
        accepted.append(r.json()["job"])
    assert refused is not None and len(accepted) == cap
    assert refused.status_code == 429, refused.text
    err = refused.json()["error"]
    assert err["code"] == "too_many_jobs" and f"at most {cap}" in err["message"]
    assert refused.headers["retry-after"]
    # uploads count too, and are refused before anything is staged
    r = ca.post(base(a) + "/documents", files=[("files", ("more.txt", b"More text about kettles.\n"))])
    assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_jobs"
    assert "more.txt" not in {d["name"] for d in ca.get(base(a) + "/documents").json()["documents"]}
    # another tenant is not affected
    assert server.upload(cb, b, "docs", {"b.txt": "Tenant B's own note.\n"})["status"] == "succeeded"
    # a cancelled job frees its place
    r = cancel(ca, a, accepted[-1]["id"])
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    again = evaluate(ca, a, 1)
    for j in [again, *accepted[1:-1], first]:
        assert cancel(ca, a, j["id"]).status_code in (200, 202)
    assert server.wait_job(ca, a, "docs", first["id"])["status"] == "cancelled"


def test_cancel_a_queued_and_a_running_evaluation(server, tenants):
    (a, ca), _ = tenants
    running, queued = evaluate(ca, a, LONG), evaluate(ca, a, LONG)
    # queued: cancelled at once, never started
    r = cancel(ca, a, queued["id"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "cancelled" and body["started"] is None and body["finished"] is not None
    assert job(ca, a, queued["id"])["status"] == "cancelled"
    # running: it stops after the item it is on and keeps the items it answered
    wait_for(ca, a, running["id"], lambda j: j["done"] >= 1)
    r = cancel(ca, a, running["id"])
    assert r.status_code == 202, r.text
    assert r.json()["cancel_requested"] is True
    end = server.wait_job(ca, a, "docs", running["id"])
    assert end["status"] == "cancelled" and 1 <= end["done"] < LONG
    result = ca.get(base(a) + f"/evaluations/{running['id']}").json()
    assert result["cancelled"] is True and result["counts"]["items"] == end["done"] == len(result["items"])
    # a finished job cannot be cancelled
    for j in (running, queued):
        r = cancel(ca, a, j["id"])
        assert r.status_code == 409 and r.json()["error"]["code"] == "job_finished"
    assert ca.get(base(a) + f"/evaluations/{queued['id']}").status_code == 404  # it never ran


def test_only_the_owner_and_the_admin_may_cancel_a_job(server, tenants):
    (a, ca), (b, cb) = tenants
    mine = evaluate(ca, a, LONG)
    other_key = server.client(server.key(a, "user:alice"))  # same tenant, same principals, other key
    for c, tenant in ((other_key, a), (cb, a), (cb, b)):
        r = c.post(base(tenant) + f"/jobs/{mine['id']}/cancel")
        assert r.status_code == 404 and r.json()["error"]["code"] == "not_found", r.text
    assert job(ca, a, mine["id"])["status"] in ("queued", "running")
    assert job(ca, a, mine["id"])["cancel_requested"] is False
    r = server.admin().post(base(a) + f"/jobs/{mine['id']}/cancel")
    assert r.status_code in (200, 202), r.text
    assert server.wait_job(ca, a, "docs", mine["id"])["status"] == "cancelled"
    assert cancel(ca, a, "no-such-job").status_code == 404


def test_cancel_a_queued_upload_drops_its_staged_files(server, tenants, tenant_name):
    (a, ca), (b, cb) = tenants
    # both workers busy with long evaluations (A's and B's), so A's upload stays queued
    server.upload(cb, b, "docs", {"moons.txt": MOONS})
    busy = [evaluate(ca, a, LONG), evaluate(cb, b, LONG)]
    for (t, c), j in zip(tenants, busy):
        wait_for(c, t, j["id"], lambda x: x["status"] == "running")
    up = server.upload(ca, a, "docs", {"queued.txt": "This upload is cancelled before it runs.\n"}, wait=False)
    assert up["status"] == "queued"
    r = cancel(ca, a, up["id"])
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    staging = server.home / "serve" / "tenants" / a / "collections" / "docs" / "staging"
    assert not staging.exists() or not any(staging.rglob("queued.txt"))
    for (t, c), j in zip(tenants, busy):
        assert cancel(c, t, j["id"]).status_code == 202
        assert server.wait_job(c, t, "docs", j["id"])["status"] == "cancelled"
    assert "queued.txt" not in {d["name"] for d in ca.get(base(a) + "/documents").json()["documents"]}


# ------------------------------------------------------------------------ a running upload, in process
# To stop an upload at a chosen point the test holds a real lock on the job's real path (the
# collection's write lock, or the embedding cache's lock that its first commit takes), so these
# run the app in this process; the requests still go through the whole ASGI stack.
@pytest.fixture(scope="module")
def app_server(tmp_path_factory):
    from fastapi.testclient import TestClient

    from ragline.config import Settings
    from ragline.serve.api import create_app
    from tests.serve.conftest import ADMIN

    settings = Settings(home=tmp_path_factory.mktemp("jobs-home"), serve={"admin_key": ADMIN},
                        ingest={"batch_docs": 1})  # one commit per file: a boundary after each
    app = create_app(settings, warm=False)
    with TestClient(app) as http:
        admin = {"Authorization": f"Bearer {ADMIN}"}
        assert http.post("/v1/tenants", json={"name": "acme"}, headers=admin).status_code == 201
        assert http.post("/v1/tenants/acme/collections", json={"name": "docs"}, headers=admin).status_code == 201
        r = http.post("/v1/tenants/acme/keys", json={"name": "k", "principals": ["user:alice"]}, headers=admin)
        http.headers["Authorization"] = f"Bearer {r.json()['key']}"
        yield http, app.state.server


def notes(prefix: str, n: int) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (f"{prefix}{i}.txt", f"Note {i} of {prefix}: the word {prefix}{i}word appears here.\n".encode()))
            for i in range(n)]


def poll(fn, timeout: float = 120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.02)
    raise AssertionError("the condition never held")


def names(http) -> set[str]:
    return {d["name"] for d in http.get(base("acme") + "/documents").json()["documents"]}


def test_a_running_upload_stops_after_the_commit_it_is_in_and_keeps_it(app_server):
    http, srv = app_server
    col = srv.collection("acme", "docs")
    with col.engine.cache._lock:  # the first file's commit waits here
        r = http.post(base("acme") + "/documents", files=notes("run", 4))
        assert r.status_code == 202, r.text
        job_id = r.json()["job"]["id"]
        poll(lambda: any(col.files.rglob("run3.txt")))  # every upload moved into place: the run is on
        r = http.post(base("acme") + f"/jobs/{job_id}/cancel")
        assert r.status_code == 202 and r.json()["status"] == "running"
    assert srv.jobs.wait_idle(120)
    job = http.get(base("acme") + f"/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["done"] == 1 and len(job["documents"]) == 1
    assert job["report"] == {"not_processed": ["run1.txt", "run2.txt", "run3.txt"]}
    assert {"run0.txt"} <= names(http) and not names(http) & {"run1.txt", "run2.txt", "run3.txt"}
    hits = http.post(base("acme") + "/query", json={"query": "run0word", "mode": "sparse", "k": 1}).json()["hits"]
    assert hits and hits[0]["source"] == "run0.txt"  # what was committed is searchable
    on_disk = {p.name for p in col.files.rglob("run*.txt")}
    assert on_disk == {"run0.txt"}  # the originals never indexed are not kept


def test_an_upload_cancelled_while_it_waits_for_the_write_lock_changes_nothing(app_server):
    http, srv = app_server
    col = srv.collection("acme", "docs")
    with col.write_lock:  # another writer holds the collection
        r = http.post(base("acme") + "/documents", files=notes("wait", 2))
        job_id = r.json()["job"]["id"]
        poll(lambda: http.get(base("acme") + f"/jobs/{job_id}").json()["status"] == "running")
        assert http.post(base("acme") + f"/jobs/{job_id}/cancel").status_code == 202
    assert srv.jobs.wait_idle(120)
    job = http.get(base("acme") + f"/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["done"] == 0 and job["documents"] == []
    assert job["report"] == {"not_processed": ["wait0.txt", "wait1.txt"]}
    assert not names(http) & {"wait0.txt", "wait1.txt"}
    assert not any(col.files.rglob("wait*.txt")) and not any((col.root / "staging").rglob("wait*.txt"))
