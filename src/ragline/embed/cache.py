"""Embedding cache keyed by (model id, content hash): unchanged text is never embedded twice."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ragline.embed.base import Embedder
from ragline.types import content_hash


class EmbeddingCache:
    """A small SQLite key-value table of float32 vectors (WAL mode, safe to kill). Usable from
    several threads; deleted entries are overwritten on disk (secure_delete), not just unlinked."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA secure_delete=ON")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS vectors (model TEXT, hash TEXT, vec BLOB, PRIMARY KEY (model, hash))"
        )

    def get_many(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        with self._lock:
            return self._get_many(model, hashes)

    def _get_many(self, model: str, hashes: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        unique = list(dict.fromkeys(hashes))
        for i in range(0, len(unique), 500):
            part = unique[i : i + 500]
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                f"SELECT hash, vec FROM vectors WHERE model = ? AND hash IN ({marks})", [model, *part]
            )
            for h, blob in rows:
                found[h] = np.frombuffer(blob, dtype=np.float32)
        return found

    def put_many(self, model: str, items: dict[str, np.ndarray]) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                [(model, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in items.items()],
            )
            self._db.execute("COMMIT")

    def delete_hashes(self, hashes: Sequence[str]) -> None:
        """Forget these texts' vectors (every model), and flush the log so no copy stays behind."""
        with self._lock:
            self._db.execute("BEGIN")
            self._db.executemany("DELETE FROM vectors WHERE hash = ?", [(h,) for h in hashes])
            self._db.execute("COMMIT")
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def has(self, text_hash: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM vectors WHERE hash = ? LIMIT 1", (text_hash,)).fetchone() is not None

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def embed_with_cache(embedder: Embedder, cache: EmbeddingCache, texts: Sequence[str]) -> tuple[np.ndarray, int]:
    """Vectors for ``texts``, embedding only those not cached. Returns (matrix, newly embedded)."""
    hashes = [content_hash(t) for t in texts]
    found = cache.get_many(embedder.model_id, hashes)
    missing: dict[str, str] = {}
    for h, t in zip(hashes, texts):
        if h not in found and h not in missing:
            missing[h] = t
    if missing:
        vecs = embedder.embed_documents(list(missing.values()))
        fresh = dict(zip(missing.keys(), vecs))
        cache.put_many(embedder.model_id, fresh)
        found.update(fresh)
    matrix = np.stack([found[h] for h in hashes]) if texts else np.zeros((0, embedder.dim), np.float32)
    return matrix.astype(np.float32, copy=False), len(missing)
