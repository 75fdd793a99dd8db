"""A tenant key's sparse scores reveal nothing of documents it cannot read (issue 13 item 2;
docs/adr/0006-sparse-statistics-under-acls.md), over real HTTP."""

from __future__ import annotations

import pytest

from tests.serve.test_api import base

pytestmark = pytest.mark.slow

QUERY = "zircon harvest yields in the northern valley"
VISIBLE = {
    "report.md": "# Valley report\n\nThe zircon harvest of the northern valley doubled. Yields of zircon rose "
                 "after the terraces were cut, and the harvest ended early.\n",
    "memo.md": "# Memo\n\nThe harvest festival in the valley is not cancelled; it moves north.\n",
}
HIDDEN = {
    "secret-1.md": "# Secret\n\nZircon zircon zircon harvest. Zircon yields in the northern valley.\n",
    "secret-2.md": "# Ledger\n\n" + "Harvest of zircon in the valley, row after row. " * 20 + "\n",
}


def scores(client, tenant: str, mode: str) -> list[tuple]:
    r = client.post(base(tenant) + "/query", json={"query": QUERY, "k": 20, "mode": mode})
    assert r.status_code == 200, r.text
    return [(h["source"], h["chunk_id"], h["scores"].get("sparse")) for h in r.json()["hits"]]


def test_a_tenant_keys_sparse_scores_do_not_move_when_hidden_documents_arrive(server, tenant_name):
    server.tenant(tenant_name)
    server.collection(tenant_name, "docs")
    admin = server.admin()
    assert server.upload(admin, tenant_name, "docs", VISIBLE, acl="group:red")["status"] == "succeeded"
    red = server.client(server.key(tenant_name, "group:red"))
    before = {mode: scores(red, tenant_name, mode) for mode in ("sparse", "hybrid")}
    assert {s for s, _, _ in before["sparse"]} == set(VISIBLE)
    assert all(x and x > 0 for _, _, x in before["sparse"])
    admin_before = scores(admin, tenant_name, "sparse")

    job = server.upload(admin, tenant_name, "docs", HIDDEN, acl="group:blue")  # the term, many times over
    assert job["status"] == "succeeded", job

    for mode in ("sparse", "hybrid"):
        assert scores(red, tenant_name, mode) == before[mode], mode  # same hits, order and scores
    # the hidden documents are indexed, and they do move the unrestricted (admin's) statistics
    admin_after = scores(admin, tenant_name, "sparse")
    assert {s for s, _, _ in admin_after} == set(VISIBLE) | set(HIDDEN)
    report = {c: x for s, c, x in admin_before if s == "report.md"}
    assert any(x != report[c] for s, c, x in admin_after if c in report)
