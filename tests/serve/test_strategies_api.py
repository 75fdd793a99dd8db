"""The answer strategy per request over HTTP: the steps in the reply, or as SSE ``step`` events
before the answer; a strategy that cannot run is a 400 naming the setting."""

from __future__ import annotations

from tests.serve.test_api import sse_events


def test_ask_with_a_strategy_returns_its_steps_and_streams_them(server, tenant_name):
    server.tenant(tenant_name)
    server.collection(tenant_name, "notes")
    admin = server.admin()
    job = server.upload(admin, tenant_name, "notes", {
        "tea.md": "# Green tea\n\nGreen tea is best brewed with water between 70 and 80 degrees Celsius."})
    assert job["status"] == "succeeded", job
    url = f"/v1/tenants/{tenant_name}/collections/notes/ask"
    body = {"question": "How hot should the water for green tea be?", "strategy": "self-check"}
    r = admin.post(url, json=body)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["strategy"] == "self-check" and "70 and 80" in out["answer"]
    assert [s["kind"] for s in out["steps"]] == ["retrieve", "generate", "check"]
    with admin.stream("POST", url, json={**body, "stream": True}) as resp:
        events = sse_events(resp)
    kinds = [k for k, _ in events]
    assert kinds[:3] == ["step", "step", "step"] and kinds[-2:] == ["answer", "done"]
    assert [d["kind"] for k, d in events if k == "step"] == ["retrieve", "generate", "check"]
    assert events[-2][1]["steps"] == [d for k, d in events if k == "step"]
    bad = admin.post(url, json={**body, "strategy": "agent"})
    assert bad.status_code == 400 and "llm.base_url" in bad.json()["error"]["message"]
    assert admin.post(url, json={**body, "strategy": "guess"}).status_code == 422
