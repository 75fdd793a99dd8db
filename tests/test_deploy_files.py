"""The deployment files (Dockerfile, deploy/compose.yaml) are not built here (no container
runtime), so what can be checked is checked: every ragline setting they pass exists and
validates, and the command the image runs is a real command line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ragline.config import Settings

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> dict:
    return yaml.safe_load((ROOT / "deploy" / "compose.yaml").read_text("utf-8"))


def test_compose_settings_are_real_ragline_settings(monkeypatch):
    services = _compose()["services"]
    replicas = [s for name, s in services.items() if name.startswith("ragline")]
    assert len(replicas) >= 2 and all(s["depends_on"]["db"]["condition"] == "service_healthy" for s in replicas)
    for svc in replicas:
        env = {k: re.sub(r"\$\{[^}]*\}", "x", str(v)) for k, v in svc["environment"].items()}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        settings = Settings()  # raises on an unknown or invalid RAGLINE_ variable
        assert settings.store.backend == "postgres" and settings.store.dsn.startswith("postgresql://")
        assert settings.store.namespace == "prod" and settings.serve.admin_key


def test_the_image_runs_as_a_user_with_a_health_check_and_a_real_command():
    text = (ROOT / "Dockerfile").read_text("utf-8")
    runtime = text.split("FROM python:3.11-slim\n", 1)[1]
    assert "USER ragline" in runtime and "HEALTHCHECK" in runtime and "/healthz" in runtime
    cmd = re.search(r'^CMD \[(.*)\]$', runtime, re.M).group(1)
    args = [a.strip().strip('"') for a in cmd.split(",")]
    from typer.testing import CliRunner

    from ragline.cli import app

    result = CliRunner().invoke(app, [*args[1:], "--help"])
    assert args[0] == "ragline" and result.exit_code == 0, result.output
    assert "torch==2.13.0" in text  # pinned and first, as in the Makefile
