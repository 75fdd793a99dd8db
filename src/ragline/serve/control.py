"""The control database: tenants, collections and API keys (SQLite, WAL).

Keys are shown once, at creation, and stored only as SHA-256 hashes of their secret part.
A key reads ``rl_<id>_<secret>``: the id finds the row, the secret is compared in constant
time against the stored hash. The secret is 32 random bytes, so a plain hash (no slow KDF)
is enough: nobody can guess it, and the hash cannot be reversed.

Keys are of two kinds (docs/security.md): a ``tenant`` key carries its own principals; an
``upstream`` key belongs to a trusted service (an SSO proxy, your backend) of one tenant and
carries none: each request states the end user's principals in ``X-Ragline-Principals``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ragline.acl import principals as valid_principals

NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
KEY_KINDS = ("tenant", "upstream")


class ControlError(Exception):
    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.code, self.message, self.status = code, message, status


def check_name(kind: str, name: str) -> str:
    if not NAME.match(name or ""):
        raise ControlError("invalid_name", f"invalid {kind} name '{name[:70]}': use 1 to 63 lower-case "
                           "letters, digits, '-' or '_', starting with a letter or digit", 400)
    return name


@dataclass(frozen=True)
class KeyInfo:
    id: str
    tenant: str
    name: str
    principals: tuple[str, ...]
    created: float
    revoked: bool
    kind: str = "tenant"  # "tenant" | "upstream"

    def public(self) -> dict:
        return {"id": self.id, "tenant": self.tenant, "name": self.name, "kind": self.kind,
                "principals": list(self.principals), "created": self.created, "revoked": self.revoked}


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def split_key(key: str) -> tuple[str, str] | None:
    parts = key.split("_")
    if len(parts) != 3 or parts[0] != "rl" or not parts[1] or not parts[2]:
        return None
    return parts[1], parts[2]


class ControlDB:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30, isolation_level=None, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript("""
                CREATE TABLE IF NOT EXISTS tenants (name TEXT PRIMARY KEY, created REAL);
                CREATE TABLE IF NOT EXISTS collections (tenant TEXT, name TEXT, created REAL,
                    PRIMARY KEY (tenant, name));
                CREATE TABLE IF NOT EXISTS keys (id TEXT PRIMARY KEY, tenant TEXT, name TEXT, hash TEXT,
                    principals TEXT, created REAL, revoked INTEGER DEFAULT 0);
                CREATE TABLE IF NOT EXISTS admin (id INTEGER PRIMARY KEY CHECK (id = 1), hash TEXT);
                CREATE TABLE IF NOT EXISTS collection_profiles (tenant TEXT, name TEXT, profile TEXT, updated REAL,
                    PRIMARY KEY (tenant, name));
            """)
            columns = [r[1] for r in self._db.execute("PRAGMA table_info(keys)")]
            if "kind" not in columns:  # a control database from before key kinds: all tenant keys
                self._db.execute("ALTER TABLE keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'tenant'")

    def _q(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # -- admin key ------------------------------------------------------------------------
    def admin_hash(self) -> str | None:
        rows = self._q("SELECT hash FROM admin WHERE id = 1")
        return rows[0][0] if rows else None

    def set_admin(self, key: str) -> None:
        self._q("INSERT OR REPLACE INTO admin VALUES (1, ?)", (_hash(key),))

    def is_admin(self, key: str) -> bool:
        stored = self.admin_hash()
        return bool(stored) and hmac.compare_digest(stored, _hash(key))

    # -- tenants and collections ------------------------------------------------------------
    def create_tenant(self, name: str) -> dict:
        check_name("tenant", name)
        if self.tenant_exists(name):
            raise ControlError("conflict", f"tenant '{name}' already exists", 409)
        now = time.time()
        self._q("INSERT INTO tenants VALUES (?, ?)", (name, now))
        return {"name": name, "created": now}

    def tenant_exists(self, name: str) -> bool:
        return bool(self._q("SELECT 1 FROM tenants WHERE name = ?", (name,)))

    def tenants(self) -> list[dict]:
        return [{"name": n, "created": c} for n, c in self._q("SELECT name, created FROM tenants ORDER BY name")]

    def delete_tenant(self, name: str) -> None:
        with self._lock:
            self._db.execute("BEGIN")
            for table in ("keys", "collections", "collection_profiles"):
                self._db.execute(f"DELETE FROM {table} WHERE tenant = ?", (name,))
            self._db.execute("DELETE FROM tenants WHERE name = ?", (name,))
            self._db.execute("COMMIT")

    def create_collection(self, tenant: str, name: str) -> dict:
        check_name("collection", name)
        if self.collection_exists(tenant, name):
            raise ControlError("conflict", f"collection '{name}' already exists", 409)
        now = time.time()
        self._q("INSERT INTO collections VALUES (?, ?, ?)", (tenant, name, now))
        return {"name": name, "created": now}

    def collection_exists(self, tenant: str, name: str) -> bool:
        return bool(self._q("SELECT 1 FROM collections WHERE tenant = ? AND name = ?", (tenant, name)))

    def collections(self, tenant: str) -> list[dict]:
        rows = self._q("SELECT name, created FROM collections WHERE tenant = ? ORDER BY name", (tenant,))
        return [{"name": n, "created": c} for n, c in rows]

    def delete_collection(self, tenant: str, name: str) -> None:
        self._q("DELETE FROM collections WHERE tenant = ? AND name = ?", (tenant, name))
        self._q("DELETE FROM collection_profiles WHERE tenant = ? AND name = ?", (tenant, name))

    # -- collection profiles (routing: description, metadata, retrieval defaults) ------------
    def set_profile(self, tenant: str, name: str, profile: dict) -> dict:
        """Replace a collection's profile (a JSON object); returns it with its update time."""
        if not self.collection_exists(tenant, name):
            raise ControlError("not_found", f"no collection '{name}' in tenant '{tenant}'", 404)
        now = time.time()
        self._q("INSERT OR REPLACE INTO collection_profiles VALUES (?, ?, ?, ?)",
                (tenant, name, json.dumps(profile), now))
        return {**profile, "updated": now}

    def profile(self, tenant: str, name: str) -> dict | None:
        """A collection's profile with its update time, or None when none was set."""
        rows = self._q("SELECT profile, updated FROM collection_profiles WHERE tenant = ? AND name = ?",
                       (tenant, name))
        return {**json.loads(rows[0][0]), "updated": rows[0][1]} if rows else None

    def profiles(self, tenant: str) -> dict[str, dict]:
        """Every profile of a tenant's collections, by collection name."""
        rows = self._q("SELECT name, profile, updated FROM collection_profiles WHERE tenant = ?", (tenant,))
        return {n: {**json.loads(p), "updated": u} for n, p, u in rows}

    # -- API keys ---------------------------------------------------------------------------
    def create_key(self, tenant: str, name: str, principals: list[str], kind: str = "tenant") -> tuple[str, KeyInfo]:
        """A new key for ``tenant``; the secret is returned here and never again."""
        if kind not in KEY_KINDS:
            raise ControlError("invalid_key_kind", f"unknown key kind '{kind[:40]}': use 'tenant' or 'upstream'", 400)
        prins = valid_principals(principals)
        if kind == "upstream" and prins:
            raise ControlError("invalid_principal", "an upstream key has no principals of its own: each request "
                               "states its user's in X-Ragline-Principals", 400)
        kid, secret = secrets.token_hex(6), secrets.token_urlsafe(32).replace("_", "-")
        now = time.time()
        self._q("INSERT INTO keys (id, tenant, name, hash, principals, created, revoked, kind) "
                "VALUES (?, ?, ?, ?, ?, ?, 0, ?)",
                (kid, tenant, name[:100], _hash(secret), json.dumps(prins), now, kind))
        return f"rl_{kid}_{secret}", KeyInfo(kid, tenant, name[:100], prins, now, False, kind)

    _COLUMNS = "id, tenant, name, hash, principals, created, revoked, kind"

    def _key(self, row: tuple) -> KeyInfo:
        kid, tenant, name, _h, prins, created, revoked, kind = row
        return KeyInfo(kid, tenant, name, tuple(json.loads(prins)), created, bool(revoked), kind)

    def keys(self, tenant: str) -> list[KeyInfo]:
        return [self._key(r) for r in self._q(f"SELECT {self._COLUMNS} FROM keys WHERE tenant = ? ORDER BY created",
                                                  (tenant,))]

    def revoke_key(self, tenant: str, kid: str) -> bool:
        with self._lock:
            cur = self._db.execute("UPDATE keys SET revoked = 1 WHERE id = ? AND tenant = ?", (kid, tenant))
            return cur.rowcount > 0

    def authenticate(self, key: str) -> KeyInfo | None:
        """The key's record (check ``revoked``) if its secret matches (constant-time comparison)."""
        parts = split_key(key)
        if parts is None:
            return None
        rows = self._q(f"SELECT {self._COLUMNS} FROM keys WHERE id = ?", (parts[0],))
        if not rows:
            hmac.compare_digest(_hash(parts[1]), _hash("x"))  # same work for unknown ids
            return None
        if not hmac.compare_digest(rows[0][3], _hash(parts[1])):
            return None
        return self._key(rows[0])

    def close(self) -> None:
        self._db.close()
