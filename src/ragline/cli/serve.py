"""`ragline serve`: run the HTTP API and the web UI."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ragline.cli import app
from ragline.cli.common import HomeOpt, err, guard, settings_for


@app.command()
def serve(
    host: Optional[str] = typer.Option(None, help="address to listen on [default: 127.0.0.1]"),
    port: Optional[int] = typer.Option(None, help="port [default: 8321]"),
    home: Optional[Path] = HomeOpt,
) -> None:
    """Serve the HTTP API (/v1, OpenAPI at /openapi.json) and the web UI (/); see docs/serve.md."""

    def go() -> None:
        import logging

        import uvicorn

        from ragline.serve.api import create_app

        settings = settings_for(home, {"serve": {"host": host, "port": port}})
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        application = create_app(settings)
        server = application.state.server
        sv = settings.serve
        err.print(f"ragline serving on http://{sv.host}:{sv.port}/  (API under /v1, docs at /docs)")
        if server.admin_key_file is not None:
            err.print(f"admin key: in {server.admin_key_file} (set RAGLINE_SERVE__ADMIN_KEY to choose one)")
        uvicorn.run(application, host=sv.host, port=sv.port, log_level="info", access_log=False,
                    timeout_graceful_shutdown=10)

    guard(go)
