"""A real `ragline serve` process on a free loopback port, and an HTTP client for it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ADMIN = "rl_admin_test-admin-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    url: str
    home: Path
    proc: subprocess.Popen
    log: Path

    def client(self, key: str | None = ADMIN, **headers: str) -> httpx.Client:
        h = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers={**h, **headers}, timeout=120)

    def admin(self) -> httpx.Client:
        """The admin key, asking to read documents too (X-Ragline-Read-All; docs/security.md)."""
        return self.client(ADMIN, **{"X-Ragline-Read-All": "1"})

    def upstream_key(self, tenant: str) -> str:
        """A key for a trusted upstream service of ``tenant`` (it states its users' principals)."""
        r = self.admin().post(f"/v1/tenants/{tenant}/keys", json={"name": "proxy", "kind": "upstream"})
        assert r.status_code == 201, r.text
        return r.json()["key"]

    def tenant(self, name: str) -> None:
        r = self.admin().post("/v1/tenants", json={"name": name})
        assert r.status_code == 201, r.text

    def key(self, tenant: str, *principals: str) -> str:
        r = self.admin().post(f"/v1/tenants/{tenant}/keys", json={"name": "test", "principals": list(principals)})
        assert r.status_code == 201, r.text
        return r.json()["key"]

    def collection(self, tenant: str, name: str) -> None:
        r = self.admin().post(f"/v1/tenants/{tenant}/collections", json={"name": name})
        assert r.status_code == 201, r.text

    def wait_job(self, client: httpx.Client, tenant: str, collection: str, job_id: str, timeout: float = 300) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = client.get(f"/v1/tenants/{tenant}/collections/{collection}/jobs/{job_id}")
            assert r.status_code == 200, r.text
            job = r.json()
            if job["status"] not in ("queued", "running"):
                return job
            time.sleep(0.1)
        raise AssertionError(f"job {job_id} did not finish")

    def upload(self, client: httpx.Client, tenant: str, collection: str, files: dict[str, bytes | str],
               acl: str | None = None, wait: bool = True) -> dict:
        parts = [("files", (name, data.encode() if isinstance(data, str) else data)) for name, data in files.items()]
        r = client.post(f"/v1/tenants/{tenant}/collections/{collection}/documents", files=parts,
                        data={"acl": acl} if acl is not None else None)
        assert r.status_code == 202, r.text
        job = r.json()["job"]
        return self.wait_job(client, tenant, collection, job["id"]) if wait else job


def start_server(home: Path, env_extra: dict[str, str] | None = None, log_name: str = "server.log") -> Server:
    port = free_port()
    env = {**os.environ, "RAGLINE_SERVE__ADMIN_KEY": ADMIN, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    log = home / log_name
    home.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-m", "ragline.cli", "serve", "--home", str(home), "--port", str(port)],
                            env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("ragline serve exited:\n" + log.read_text())
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return Server(url, home, proc, log)
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("ragline serve did not become ready:\n" + log.read_text())


def stop_server(server: Server) -> None:
    server.proc.terminate()
    try:
        server.proc.wait(15)
    except subprocess.TimeoutExpired:
        server.proc.kill()


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    """One server for the session; tests use their own tenants (uniquely named) to stay apart."""
    srv = start_server(tmp_path_factory.mktemp("serve-home"), {"RAGLINE_SERVE__RATE_LIMIT_PER_MINUTE": "100000",
                                                               "RAGLINE_SERVE__RATE_LIMIT_BURST": "10000"})
    yield srv
    stop_server(srv)


_counter = iter(range(10**6))


@pytest.fixture
def tenant_name(request) -> str:
    """A fresh tenant name per test."""
    return f"t{next(_counter)}-{abs(hash(request.node.nodeid)) % 10**6}"
