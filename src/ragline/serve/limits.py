"""ASGI middleware that acts before a route reads anything (key check, body size limits,
security headers), and per-key rate limits (token buckets)."""

from __future__ import annotations

import json
import threading
import time
from typing import Callable

import anyio

from ragline.serve.errors import FRAME_ANCESTORS, SECURITY_HEADERS, error_body

# What a key check answers: None for a valid key, else (error code, message) for the 401.
# a key -> (None, who it is) when valid, else ((code, message), None)
KeyCheck = Callable[[str], "tuple[tuple[str, str] | None, object]"]


def _header(scope, name: bytes) -> str:
    """The first value of a request header (as Starlette's ``request.headers.get`` reads it)."""
    for k, v in scope.get("headers") or []:
        if k.lower() == name:
            return v.decode("latin-1")
    return ""


def presented_key(scope) -> str:
    """The API key a request carries: ``Authorization: Bearer <key>``, else ``X-API-Key``."""
    auth = _header(scope, b"authorization")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else _header(scope, b"x-api-key").strip()


async def _json(send, status: int, code: str, message: str, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """A complete JSON error answer; the connection closes, since the body may be unread."""
    body = json.dumps(error_body(code, message)).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), *extra]})
    await send({"type": "http.response.body", "body": body})


class KeyFirst:
    """Answers 401 to an API request (``/v1``) without a valid key before anything reads its
    body. Otherwise a client with no key could make the server read, and the form parser spool
    to disk, a body of up to ``serve.max_request_mb`` before hearing no. Only the key's
    validity is checked here; who the caller is and what it may do is decided by the route."""

    def __init__(self, app, check: KeyCheck, prefix: str = "/v1") -> None:
        self.app, self.check, self.prefix = app, check, prefix

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == self.prefix or path.startswith(self.prefix + "/"):
            # the check reads the control database: off the event loop
            key = presented_key(scope)
            problem, identity = await anyio.to_thread.run_sync(self.check, key)
            if problem is not None:
                return await _json(send, 401, *problem, ((b"www-authenticate", b"Bearer"),))
            # handed on, so the route resolving the caller does not look the key up again
            scope.setdefault("state", {})["ragline_key"] = (key, identity)
        return await self.app(scope, receive, send)


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every response: no page may be framed (``X-Frame-Options``
    and CSP ``frame-ancestors``, added to a route's own policy), no URL is sent on as a
    referrer, no type is sniffed."""

    def __init__(self, app) -> None:
        self.app = app
        self.fixed = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()
                      if k.lower() != "content-security-policy"]
        self.names = {k for k, _ in self.fixed}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def with_headers(message):
            if message["type"] == "http.response.start":
                headers, csp = [], None
                for k, v in message.get("headers") or []:
                    name = bytes(k).lower()
                    if name == b"content-security-policy":
                        csp = bytes(v)
                    elif name not in self.names:
                        headers.append((k, v))
                if csp is None:
                    csp = FRAME_ANCESTORS.encode()
                elif b"frame-ancestors" not in csp:
                    csp = csp.rstrip(b"; ") + b"; " + FRAME_ANCESTORS.encode()
                message = {**message, "headers": [*headers, *self.fixed, (b"content-security-policy", csp)]}
            await send(message)

        return await self.app(scope, receive, with_headers)


class BodyLimit:
    """Refuses bodies over the limit with 413, by Content-Length up front or by counting the
    bytes of a body sent without one. Only ``multipart/form-data`` (uploads) gets the upload
    limit; every other body, whatever its content type says (``application/x+json``,
    ``text/plain``, none), gets the JSON limit, since a route parses any of them as JSON."""

    def __init__(self, app, max_bytes: int, max_json_bytes: int) -> None:
        self.app, self.max_bytes, self.max_json = app, max_bytes, max_json_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        ctype = headers.get(b"content-type", b"").decode("latin-1").lower()
        limit = self.max_bytes if ctype.split(";")[0].strip() == "multipart/form-data" else self.max_json
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_big = int(length) > limit
            except ValueError:
                too_big = False
            if too_big:
                return await self._refuse(send, limit)
        seen = 0
        refused = False

        async def counting_receive():
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    refused = True
                    raise _TooLarge()
            return message

        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send, limit)
        except Exception:
            if refused and not started:
                await self._refuse(send, limit)
            else:
                raise

    @staticmethod
    async def _refuse(send, limit: int) -> None:
        size = f"{limit / 2**20:.1f} MiB" if limit >= 2**20 else f"{limit / 1024:.0f} KiB"
        await _json(send, 413, "too_large", f"the request body is larger than the limit of {size}")


class _TooLarge(Exception):
    pass


class RateLimiter:
    """A token bucket per key: ``per_minute`` sustained, ``burst`` at once."""

    def __init__(self, per_minute: int, burst: int) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 if the request may go ahead, else the seconds to wait before retrying."""
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate
