"""A scripted OpenAI-compatible chat server, for testing loops that call an LLM.

It is a real HTTP server speaking the chat-completions wire protocol (JSON replies, server-sent
event streams, error bodies, ``tool_calls``), so the client code under test runs unchanged; only
the model is replaced by a script: a list of replies given in turn, or a function of the request.
Every request body is kept in ``requests`` for assertions.

    with ScriptedLLM(["first reply", Fail(503, "overloaded")]) as llm:
        settings.llm.base_url = llm.url
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Sequence, Union


@dataclass(frozen=True)
class Fail:
    """An error reply: the status and the message of an OpenAI-style error body."""

    status: int = 500
    message: str = "scripted failure"


@dataclass(frozen=True)
class ToolCalls:
    """A reply that calls tools: ``calls`` is a list of (name, arguments dict)."""

    calls: Sequence[tuple[str, dict]]
    content: str = ""


Reply = Union[str, Fail, ToolCalls]


@dataclass
class ScriptedLLM:
    script: Sequence[Reply] | Callable[[dict], Reply]
    model: str = "scripted"
    requests: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._turn = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "ScriptedLLM":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def next_reply(self, request: dict) -> Reply:
        with self._lock:
            self.requests.append(request)
            if callable(self.script):
                return self.script(request)
            if self._turn >= len(self.script):
                return Fail(500, f"the script has no reply for request {self._turn + 1}")
            reply = self.script[self._turn]
            self._turn += 1
            return reply


def _usage(request: dict, text: str) -> dict:
    prompt = sum(len(str(m.get("content") or "").split()) for m in request.get("messages", []))
    completion = len(text.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _message(reply: str | ToolCalls) -> dict[str, Any]:
    if isinstance(reply, str):
        return {"role": "assistant", "content": reply}
    return {"role": "assistant", "content": reply.content or None,
            "tool_calls": [{"id": f"call_{i}", "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args)}}
                           for i, (name, args) in enumerate(reply.calls)]}


def _handler_for(llm: ScriptedLLM) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _json(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:  # noqa: N802 - the http.server hook's name
            raw = self.rfile.read(int(self.headers.get("content-length", 0)))
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._json(404, {"error": {"message": f"no route {self.path}"}})
                return
            try:
                request = json.loads(raw)
            except ValueError:
                self._json(400, {"error": {"message": "the body is not JSON"}})
                return
            reply = llm.next_reply(request)
            if isinstance(reply, Fail):
                self._json(reply.status, {"error": {"message": reply.message, "type": "scripted"}})
                return
            text = reply if isinstance(reply, str) else reply.content
            finish = "stop" if isinstance(reply, str) else "tool_calls"
            if not request.get("stream"):
                self._json(200, {"id": "chatcmpl-scripted", "object": "chat.completion", "model": llm.model,
                                 "choices": [{"index": 0, "message": _message(reply), "finish_reason": finish}],
                                 "usage": _usage(request, text)})
                return
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.end_headers()
            pieces = [w + " " for w in text.split(" ")] if text else []
            if pieces:
                pieces[-1] = pieces[-1][:-1]
            for piece in pieces:
                event = {"object": "chat.completion.chunk", "model": llm.model,
                         "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            if isinstance(reply, ToolCalls):
                event = {"object": "chat.completion.chunk", "model": llm.model,
                         "choices": [{"index": 0, "delta": {"tool_calls": [
                             dict(c, index=i) for i, c in enumerate(_message(reply)["tool_calls"])]},
                             "finish_reason": None}]}
                self.wfile.write(f"data: {json.dumps(event)}\n\n".encode())
            end = {"object": "chat.completion.chunk", "model": llm.model,
                   "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}
            self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
            self.wfile.flush()

    return Handler
