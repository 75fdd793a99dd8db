"""The web UI (src/ragline/serve/ui/) in headless Chromium, against a real `ragline serve`.

Each flow saves a screenshot to test-artifacts/ui/<name>.png. Without /usr/bin/chromium (or the
playwright package) the tests skip, unless RAGLINE_REQUIRE_BROWSER=1 makes that a failure.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from .conftest import Server, start_server, stop_server

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic"]
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "test-artifacts" / "ui"
UI = ROOT / "src" / "ragline" / "serve" / "ui"
SLOW = 180_000  # ms: ingestion and answers embed on a small CPU

CAKE = ("# Family recipes\n\n## Plum cake\n\nGrandma Ottilie bakes her plum cake every September. "
        "The secret ingredient of Grandma Ottilie's plum cake is a spoonful of ground cardamom in the batter. "
        "She bakes it for forty minutes at 180 degrees.\n\n## Bread\n\nThe rye bread rests overnight in a cold "
        "cellar before it is baked. Its label reads <b>rye</b> & <img src=x onerror=\"window.pwned=1\">\n")
VOLCANO = ("Volcano notes\n\nThe tallest active volcano on Earth is Ojos del Salado, which rises 6,893 metres on "
           "the border between Chile and Argentina. Kilauea on Hawaii erupted almost continuously from 1983 "
           "to 2018. Volcanic ash can ground aircraft for days.\n")
CAKE_Q = "What is the secret ingredient of Grandma Ottilie's plum cake?"
VOLCANO_Q = "Which is the tallest active volcano on Earth?"


def _require_browser() -> None:
    required = os.environ.get("RAGLINE_REQUIRE_BROWSER") == "1"
    problem = None
    if not CHROMIUM.exists():
        problem = f"{CHROMIUM} is not installed"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed (pip install 'playwright>=1.40')"
    if problem:
        if required:
            pytest.fail(f"RAGLINE_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(f"the UI tests need headless Chromium: {problem}")


@pytest.fixture(scope="module")
def browser():
    _require_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    from playwright.sync_api import expect

    expect.set_options(timeout=20_000)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    yield pg
    context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def sign_in(page, url: str, key: str, tenant: str, ok: bool = True) -> None:
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_label("API key").fill(key)
    page.get_by_label("Tenant").fill(tenant)
    page.get_by_role("button", name="Sign in").click()
    if ok:
        expect(page.locator("#who")).to_contain_text(f"Signed in to {tenant}")


def setup_tenant(server: Server, tenant: str, *principals: str, collection: str | None = "docs") -> str:
    server.tenant(tenant)
    key = server.key(tenant, *principals)
    if collection:
        server.collection(tenant, collection)
    return key


def ask(page, question: str) -> None:
    """Ask from the Ask view and wait for the final answer (the stream finished)."""
    from playwright.sync_api import expect

    page.goto(page.url.split("#")[0] + "#ask")
    page.get_by_label("Question").fill(question)
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.locator("#answer-box")).to_have_attribute("data-state", "done", timeout=SLOW)
    expect(page.locator("#ask-error")).to_be_hidden()


def norm(text: str) -> str:
    return " ".join(text.split())


# --------------------------------------------------------------------------- served, offline, no HTML injection
def test_ui_is_served_self_contained(server):
    """The page and its modules come from the server itself (no CDN: it must work offline), and
    no script builds HTML from strings."""
    r = httpx.get(server.url + "/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.js">' in r.text
    files = sorted(p.name for p in UI.iterdir())
    assert {"index.html", "app.js", "style.css"} <= set(files)
    for name in files:
        got = httpx.get(f"{server.url}/ui/{name}")
        assert got.status_code == 200, name
        if name.endswith(".js"):
            assert "javascript" in got.headers["content-type"], name
        text = (UI / name).read_text("utf-8")
        assert not re.search(r"https?://|//cdn|@import", text), f"{name} loads something from outside"
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(", text), name


# --------------------------------------------------------------------------- (a) sign in, create, drop files
def test_sign_in_create_collection_and_drop_files(server, tenant_name, page):
    from playwright.sync_api import expect

    key = setup_tenant(server, tenant_name, "group:kitchen", collection=None)
    sign_in(page, server.url, key, tenant_name)
    expect(page.locator("#who")).to_contain_text("group:kitchen")  # the key's principals
    expect(page.locator("#needs")).to_contain_text("Create a collection")

    page.get_by_label("New collection name").fill("handbook")
    page.get_by_role("button", name="Create").click()
    expect(page.get_by_label("Collection", exact=True)).to_have_value("handbook")
    assert page.evaluate("localStorage.getItem('ragline.tenant')") == tenant_name

    page.get_by_role("link", name="Library").click()
    expect(page.locator("#documents-empty")).to_be_visible()
    page.get_by_label("Access (optional)").fill("group:kitchen, user:ottilie")
    # a real drop: a DataTransfer built in the page, carried by dragenter/dragover/drop events
    page.evaluate("""(files) => {
        const dt = new DataTransfer();
        for (const [name, text] of files) dt.items.add(new File([text], name, {type: "text/plain"}));
        const zone = document.getElementById("dropzone");
        for (const type of ["dragenter", "dragover", "drop"])
            zone.dispatchEvent(new DragEvent(type, {bubbles: true, cancelable: true, dataTransfer: dt}));
    }""", [["recipes.md", CAKE], ["volcanoes.txt", VOLCANO]])

    job = page.locator("#jobs li.job").first
    expect(job).to_contain_text("recipes.md")
    expect(job).to_have_attribute("data-status", "succeeded", timeout=SLOW)
    expect(job).to_contain_text("Done: 2 files indexed")
    assert job.locator("progress").evaluate("p => p.value") == 1
    rows = page.locator("#documents tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="recipes.md")).to_contain_text("markdown")
    expect(rows.filter(has_text="volcanoes.txt")).to_contain_text("group:kitchen")
    expect(rows.filter(has_text="volcanoes.txt")).to_contain_text("user:ottilie")
    shot(page, "library-uploaded")

    # settings survive a reload: signed in again from localStorage, same collection
    page.reload()
    expect(page.locator("#who")).to_contain_text(f"Signed in to {tenant_name}")
    expect(page.get_by_label("Collection", exact=True)).to_have_value("handbook")
    expect(page.locator("#documents tbody tr")).to_have_count(2)


# --------------------------------------------------------------------------- (b) ask, stream, open a citation
def test_ask_streams_answer_and_opens_cited_passage(server, tenant_name, page):
    from playwright.sync_api import expect

    key = setup_tenant(server, tenant_name)
    server.upload(server.client(key), tenant_name, "docs", {"recipes.md": CAKE, "volcanoes.txt": VOLCANO})
    sign_in(page, server.url, key, tenant_name)

    page.get_by_label("Question").fill(CAKE_Q)
    page.get_by_label("Question").press("Enter")  # Enter submits
    answer = page.locator("#answer")
    expect(answer).to_contain_text("cardamom", timeout=SLOW)  # the streamed text
    expect(page.locator("#answer-box")).to_have_attribute("data-state", "done", timeout=SLOW)
    expect(answer).not_to_have_class(re.compile(r"\bstreaming\b"))
    cite = answer.locator("button.cite[data-n='1']")
    expect(cite).to_have_text("[1]")
    source = page.locator("#sources li").first
    expect(source).to_contain_text("recipes.md")
    snippet = norm(source.locator("blockquote").text_content())
    assert "cardamom" in snippet

    cite.click()
    panel = page.locator("#doc-panel")
    expect(panel).to_be_visible()
    expect(panel.locator("#doc-title")).to_have_text("recipes.md")
    expect(panel.locator("#doc-meta")).to_contain_text("Plum cake")  # the heading of the cited section
    mark = panel.locator("mark")
    expect(mark).to_be_visible()
    expect(mark).to_be_in_viewport()
    marked = norm(mark.inner_text())
    assert marked and (marked in snippet or snippet in marked), (marked, snippet)
    assert "cardamom" in marked
    # the highlight sits in the whole document, the text before and after it included
    whole = norm(panel.locator("#doc-text").inner_text())
    assert "Family recipes" in whole[:20] and "before it is baked." in whole
    # document text is text: markup in it is shown, never run
    assert 'reads <b>rye</b> & <img src=x onerror="window.pwned=1">' in whole
    assert panel.locator("#doc-text b, #doc-text img").count() == 0
    assert page.evaluate("window.pwned") is None
    shot(page, "ask-citation")

    page.keyboard.press("Escape")
    expect(panel).to_be_hidden()
    expect(cite).to_be_focused()


def test_a_strategy_shows_its_steps_as_they_happen(server, tenant_name, page):
    from playwright.sync_api import expect

    key = setup_tenant(server, tenant_name)
    server.upload(server.client(key), tenant_name, "docs", {"recipes.md": CAKE, "volcanoes.txt": VOLCANO})
    sign_in(page, server.url, key, tenant_name)
    page.goto(page.url.split("#")[0] + "#ask")
    page.get_by_label("Strategy").select_option("self-check")
    ask(page, CAKE_Q)
    steps = page.locator("#steps li")
    expect(steps).to_have_count(3)
    assert [steps.nth(i).get_attribute("data-kind") for i in range(3)] == ["retrieve", "generate", "check"]
    expect(page.locator("#steps-box")).to_be_visible()
    expect(page.locator("#answer")).to_contain_text("cardamom")
    shot(page, "ask-strategy-steps")
    page.get_by_label("Strategy").select_option("")  # back to standard: no steps shown
    ask(page, CAKE_Q)
    expect(page.locator("#steps-box")).to_be_hidden()


# --------------------------------------------------------------------------- (c) delete a document
def test_delete_document_removes_it_from_list_and_answers(server, tenant_name, page):
    from playwright.sync_api import expect

    key = setup_tenant(server, tenant_name)
    server.upload(server.client(key), tenant_name, "docs", {"recipes.md": CAKE, "volcanoes.txt": VOLCANO})
    sign_in(page, server.url, key, tenant_name)
    ask(page, CAKE_Q)
    expect(page.locator("#sources")).to_contain_text("recipes.md")

    page.get_by_role("link", name="Library").click()
    row = page.locator("#documents tbody tr", has_text="recipes.md")
    expect(row).to_be_visible()
    row.get_by_role("button", name="Delete recipes.md").click()
    dialog = page.locator("dialog#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Delete 'recipes.md'")
    shot(page, "library-confirm-delete")
    dialog.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    expect(page.locator("#documents tbody tr")).to_have_count(1)
    expect(page.locator("#library-status")).to_contain_text("Deleted recipes.md")
    shot(page, "library-deleted")

    ask(page, CAKE_Q)
    expect(page.locator("#sources")).not_to_contain_text("recipes.md")
    expect(page.locator("#answer")).not_to_contain_text("cardamom")
    shot(page, "ask-after-delete")


# --------------------------------------------------------------------------- (d) readable errors
def test_errors_are_readable_messages(server, tenant_name, page, tmp_path):
    from playwright.sync_api import expect

    key = setup_tenant(server, tenant_name)
    sign_in(page, server.url, "rl_not-a-real-key", tenant_name, ok=False)
    error = page.locator("#session-error")
    expect(error).to_have_text("Sign-in failed: the API key is not valid")

    sign_in(page, server.url, key, tenant_name)
    expect(error).to_be_hidden()
    page.get_by_role("link", name="Library").click()
    bad = tmp_path / "payload.exe"
    bad.write_bytes(b"MZ\x90\x00")
    page.set_input_files("#file-input", str(bad))
    upload_error = page.locator("#upload-error")
    expect(upload_error).to_contain_text("Upload failed: no file can be ingested")
    expect(upload_error).to_contain_text("unsupported file type '.exe'")
    assert "{" not in upload_error.inner_text()  # a message, not raw JSON

    # a mixed upload: the good file is indexed, the bad one listed with its reason
    good = tmp_path / "good.txt"
    good.write_text(VOLCANO)
    other = tmp_path / "diagram.xyz"
    other.write_text("not a document")
    page.set_input_files("#file-input", [str(good), str(other)])
    job = page.locator("#jobs li.job").first
    expect(job).to_have_attribute("data-status", "partial", timeout=SLOW)
    expect(job).to_contain_text("1 of 2 indexed, 1 failed")
    expect(job.locator(".job-errors li")).to_have_text(re.compile(r"^diagram\.xyz: unsupported file type '\.xyz'"))
    expect(upload_error).to_be_hidden()
    expect(page.locator("#documents tbody tr")).to_have_count(1)
    shot(page, "upload-errors")


# --------------------------------------------------------------------------- (e) the evaluation report
def test_evaluation_page_shows_latest_report(server, tenant_name, page):
    from playwright.sync_api import expect

    key = setup_tenant(server, tenant_name)
    client = server.client(key)
    server.upload(client, tenant_name, "docs", {"recipes.md": CAKE, "volcanoes.txt": VOLCANO})
    sign_in(page, server.url, key, tenant_name)
    page.get_by_role("link", name="Evaluation").click()
    expect(page.locator("#eval-empty")).to_be_visible()
    expect(page.locator("#eval-empty")).to_contain_text("No evaluation of this collection yet")
    shot(page, "evaluation-empty")

    items = [{"id": "cake", "question": CAKE_Q, "answer": "ground cardamom", "relevant_ids": ["recipes.md"]},
             {"id": "volcano", "question": VOLCANO_Q, "answer": "Ojos del Salado", "relevant_ids": ["volcanoes.txt"]}]
    r = client.post(f"/v1/tenants/{tenant_name}/collections/docs/evaluations", json={"items": items, "k": 3})
    assert r.status_code == 202, r.text
    job = server.wait_job(client, tenant_name, "docs", r.json()["job"]["id"])
    assert job["status"] == "succeeded", job
    report = client.get(f"/v1/tenants/{tenant_name}/collections/docs/evaluations/latest").json()

    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#eval-empty")).to_be_hidden()
    view = page.locator("#eval-report")
    expect(view).to_contain_text(f"Judge: {report['judge']}")
    metrics = view.locator("table.metrics").first
    expect(metrics).to_contain_text("Faithfulness")
    expect(metrics).to_contain_text("Hallucination rate")
    faith = report["answers"]["faithfulness"]
    expect(metrics.locator("tr", has_text="Faithfulness")).to_contain_text(f"{faith:.3f}" if faith is not None else "n/a")
    expect(view).to_contain_text("recall@3")  # retrieval metrics: the items named relevant documents
    expect(view.locator(".card", has_text="Questions")).to_contain_text("2")
    expect(view.locator(".card", has_text="Latency p50")).to_contain_text("ms")
    rows = view.locator("table.items tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="plum cake")).to_contain_text("recipes.md")
    expect(rows.filter(has_text="tallest active volcano")).to_contain_text("volcanoes.txt")
    shot(page, "evaluation-report")


# --------------------------------------------------------------------------- token-by-token streaming
class _FakeLLM(ThreadingHTTPServer):
    """An OpenAI-compatible chat endpoint that streams a fixed answer and holds back its end
    until the test releases it, so the page can be seen mid-answer."""

    daemon_threads = True
    pieces = ["The secret", " ingredient", " is ground", " cardamom"]
    rest = [" [1]", "."]

    def __init__(self) -> None:
        self.release = threading.Event()
        super().__init__(("127.0.0.1", 0), _FakeLLMHandler)


class _FakeLLMHandler(BaseHTTPRequestHandler):
    server: _FakeLLM

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if not self.path.endswith("/chat/completions"):
            self.send_error(404)
            return
        if b"overloaded" in body:  # a question that makes the model fail
            data = json.dumps({"error": {"message": "the model is overloaded"}}).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()

        def send(piece: str) -> None:
            event = {"choices": [{"index": 0, "delta": {"content": piece}}]}
            self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            self.wfile.flush()

        for piece in self.server.pieces:
            send(piece)
            time.sleep(0.05)
        self.server.release.wait(120)
        for piece in self.server.rest:
            send(piece)
        self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory, browser):
    fake = _FakeLLM()
    threading.Thread(target=fake.serve_forever, daemon=True).start()
    srv = start_server(tmp_path_factory.mktemp("serve-llm"), {
        "RAGLINE_LLM__BASE_URL": f"http://127.0.0.1:{fake.server_address[1]}/v1", "RAGLINE_LLM__MODEL": "fake-llm",
        "RAGLINE_SERVE__RATE_LIMIT_PER_MINUTE": "100000", "RAGLINE_SERVE__RATE_LIMIT_BURST": "10000"})
    yield srv, fake
    stop_server(srv)
    fake.shutdown()


def test_answer_appears_token_by_token(llm_server, tenant_name, page):
    from playwright.sync_api import expect

    server, fake = llm_server
    key = setup_tenant(server, tenant_name)
    server.upload(server.client(key), tenant_name, "docs", {"recipes.md": CAKE})
    sign_in(page, server.url, key, tenant_name)
    page.get_by_label("Question").fill(CAKE_Q)
    page.get_by_role("button", name="Ask", exact=True).click()
    answer = page.locator("#answer")
    # the first tokens are on the page while the model still holds back the rest
    expect(answer).to_have_text("The secret ingredient is ground cardamom", timeout=SLOW)
    expect(answer).to_have_class(re.compile(r"\bstreaming\b"))
    expect(page.locator("#answer-box")).to_have_attribute("data-state", "streaming")
    expect(answer.locator("button.cite")).to_have_count(0)  # citations come with the final answer
    expect(page.locator("#ask-button")).to_be_disabled()
    shot(page, "ask-streaming")
    fake.release.set()
    expect(page.locator("#answer-box")).to_have_attribute("data-state", "done", timeout=SLOW)
    expect(answer).not_to_have_class(re.compile(r"\bstreaming\b"))
    expect(answer).to_contain_text("The secret ingredient is ground cardamom")
    expect(answer.locator("button.cite[data-n='1']")).to_be_visible()
    expect(page.locator("#answer-badges")).to_contain_text("fake-llm")
    answer.locator("button.cite[data-n='1']").click()
    expect(page.locator("#doc-panel mark")).to_be_visible()
    shot(page, "ask-streamed-answer")


def test_answer_failure_is_a_readable_message(llm_server, tenant_name, page):
    from playwright.sync_api import expect

    server, _ = llm_server
    key = setup_tenant(server, tenant_name)
    server.upload(server.client(key), tenant_name, "docs", {"recipes.md": CAKE})
    sign_in(page, server.url, key, tenant_name)
    page.get_by_label("Question").fill("Is the plum cake oven overloaded?")
    page.get_by_role("button", name="Ask", exact=True).click()
    expect(page.locator("#answer-box")).to_have_attribute("data-state", "error", timeout=SLOW)
    error = page.locator("#ask-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("The question could not be answered: the language model is unavailable")
    expect(error).not_to_contain_text("127.0.0.1")  # the endpoint's address stays in the server log
    expect(page.locator("#answer-box")).to_be_hidden()
    expect(page.locator("#ask-button")).to_be_enabled()
    shot(page, "ask-error")
