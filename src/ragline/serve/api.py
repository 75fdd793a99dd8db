"""The HTTP API (FastAPI): tenants, keys, collections, documents, jobs, query, ask, evaluations.

Every route under ``/v1/tenants/{tenant}`` is confined to that tenant: the caller's key must
belong to it (or be the admin key). Inside a collection, every read goes through the caller's
principals as a store prefilter (retrieve/acl.py). See docs/serve.md.

This module only assembles the app: the shared ``Server`` (server.py) on ``app.state.server``,
the middleware, and one router per resource group (routes/). Who a request is and what it may
reach is decided in deps.py; what it reads and writes is in schemas.py.
"""

from __future__ import annotations

import threading
from functools import partial

from fastapi import FastAPI

from ragline.config import Settings
from ragline.serve.deps import Caller, key_problem
from ragline.serve.errors import install as install_errors
from ragline.serve.limits import BodyLimit, KeyFirst, SecurityHeaders
from ragline.serve.routes import ROUTERS, ui
from ragline.serve.server import Server

__all__ = ["Caller", "Server", "create_app"]


def create_app(settings: Settings, warm: bool = True) -> FastAPI:
    server = Server(settings)
    from ragline.serve.routes.documents import rebuild_ingest
    from ragline.serve.routes.evaluations import rebuild_evaluation

    # durable jobs another process (or an earlier one of this server) saved
    for kind in ("ingest", "reingest"):
        server.jobs.factories[kind] = lambda job, spec: rebuild_ingest(server, job, spec)
    server.jobs.factories["evaluation"] = lambda job, spec: rebuild_evaluation(server, job, spec)
    # no Swagger UI: FastAPI's loads its scripts from a CDN (a floating version, no integrity hash)
    app = FastAPI(title="ragline", version=_version(), docs_url=None, redoc_url=None,
                  description="Retrieval-augmented generation over your documents, per tenant and collection, "
                              "with document-level access control. Errors are JSON: {\"error\": {\"code\", \"message\"}}.")
    app.state.server = server
    install_errors(app)
    # middleware: the last added is the outermost, so a request meets SecurityHeaders, the UI's
    # headers, KeyFirst (a 401 before anything reads the body), then BodyLimit (413)
    sv = settings.serve
    app.add_middleware(BodyLimit, max_bytes=int(sv.max_request_mb * 2**20), max_json_bytes=int(sv.max_json_kb * 1024))
    app.add_middleware(KeyFirst, check=partial(key_problem, server.control))
    if warm:
        threading.Thread(target=server.warm_up, name="ragline-warm-up", daemon=True).start()
    else:
        server.warm_up()
    for router in ROUTERS:
        app.include_router(router)
    app.middleware("http")(ui.ui_headers)
    ui.install(app)
    app.add_middleware(SecurityHeaders)  # last, so outermost: every response, the 401s and 413s too
    return app


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ragline")
    except PackageNotFoundError:
        return "0"
