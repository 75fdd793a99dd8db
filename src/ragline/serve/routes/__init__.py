"""The HTTP API's routes, one ``APIRouter`` per resource group; ``serve/api.py`` includes them
in the order of ``ROUTERS`` (the order FastAPI matches paths in)."""

from __future__ import annotations

from ragline.serve.routes import collections, compat, documents, evaluations, health, jobs, routing, search, tenants

ROUTERS = [health.router, tenants.router, collections.router, documents.router, jobs.router, routing.router,
           search.router, evaluations.router, compat.router]
