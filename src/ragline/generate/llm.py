"""A client for any OpenAI-compatible chat-completions endpoint, with streaming and tool calls."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Iterator, NamedTuple, Sequence

import httpx


class LLMError(Exception):
    """The LLM endpoint failed; the message carries its status and reason."""


@dataclass(frozen=True)
class Completion:
    """One non-streamed reply: its text and the endpoint's ``usage`` token counts (None when absent)."""

    text: str
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None


class ToolCall(NamedTuple):
    """One function call the model asked for: the endpoint's call id, the tool's name, its arguments."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(frozen=True)
class ToolReply:
    """One reply to a request that offered tools: its text (may be empty), the calls it makes (none
    when the model answered in plain text), the endpoint's token counts, and why it stopped."""

    content: str
    calls: tuple[ToolCall, ...]
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    finish_reason: str | None = None

    def message(self) -> dict:
        """The assistant message to send back in the history, so the next request's tool results
        answer these calls by id."""
        msg: dict[str, Any] = {"role": "assistant", "content": self.content or None}
        if self.calls:
            msg["tool_calls"] = [{"id": c.id, "type": "function",
                                  "function": {"name": c.name, "arguments": json.dumps(c.arguments)}}
                                 for c in self.calls]
        return msg


def _count(usage: object, key: str) -> int | None:
    value = usage.get(key) if isinstance(usage, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


class ChatClient:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout_s: float = 120.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(timeout=httpx.Timeout(timeout_s, connect=10.0), headers=headers)

    def _body(self, messages: list[dict], max_tokens: int, temperature: float, stream: bool) -> dict:
        return {"model": self.model, "messages": messages, "max_tokens": max_tokens,
                "temperature": temperature, "stream": stream}

    def _fail(self, resp: httpx.Response) -> LLMError:
        try:
            detail = resp.json().get("error", resp.text)
            if isinstance(detail, dict):
                detail = detail.get("message", detail)
        except ValueError:
            detail = resp.text
        return LLMError(f"LLM endpoint {self.base_url} answered {resp.status_code}: {str(detail)[:300]}")

    def complete(self, messages: list[dict], max_tokens: int = 512, temperature: float = 0.1) -> str:
        return self.chat(messages, max_tokens, temperature).text

    def chat(self, messages: list[dict], max_tokens: int = 512, temperature: float = 0.1,
             response_format: dict | None = None) -> Completion:
        """A non-streamed reply with the endpoint's token usage. ``response_format`` (e.g.
        ``{"type": "json_object"}``) is passed through when given."""
        body = self._body(messages, max_tokens, temperature, False)
        if response_format is not None:
            body["response_format"] = response_format
        try:
            resp = self._http.post(f"{self.base_url}/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise LLMError(f"LLM endpoint {self.base_url} unreachable: {exc}") from None
        if resp.status_code != 200:
            raise self._fail(resp)
        try:
            data = resp.json()
            choice = data["choices"][0]
            text = choice["message"]["content"] or ""
        except (ValueError, KeyError, IndexError, TypeError):
            raise LLMError(f"LLM endpoint {self.base_url} returned an unexpected body: {resp.text[:300]}") from None
        usage = data.get("usage")
        return Completion(text, _count(usage, "prompt_tokens"), _count(usage, "completion_tokens"),
                          choice.get("finish_reason") if isinstance(choice, dict) else None)

    def chat_tools(self, messages: list[dict], tools: Sequence[dict], max_tokens: int = 512,
                   temperature: float = 0.1, tool_choice: str | dict = "auto") -> ToolReply:
        """A non-streamed reply to a request that offers ``tools`` (OpenAI ``tools`` / ``tool_calls``
        wire format). Raises ``LLMError`` when the endpoint refuses tools, when it answers a
        ``tool_choice`` that demands a call with text only (both: "does not support tool calls"),
        and when a call's arguments are not a JSON object."""
        body = self._body(messages, max_tokens, temperature, False)
        body["tools"], body["tool_choice"] = list(tools), tool_choice
        try:
            resp = self._http.post(f"{self.base_url}/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise LLMError(f"LLM endpoint {self.base_url} unreachable: {exc}") from None
        if resp.status_code != 200:
            error = self._fail(resp)
            if resp.status_code in (400, 422, 500, 501) and "tool" in str(error).lower():
                raise self._no_tools(str(error))
            raise error
        try:
            data = resp.json()
            choice = data["choices"][0]
            message = choice["message"]
            content = message.get("content") or ""
            raw_calls = message.get("tool_calls") or []
            calls = tuple(self._tool_call(i, c) for i, c in enumerate(raw_calls))
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            raise LLMError(f"LLM endpoint {self.base_url} returned an unexpected body: {resp.text[:300]}") from None
        if not calls and tool_choice not in ("auto", "none"):
            raise self._no_tools(f"asked to call a tool (tool_choice={json.dumps(tool_choice)}), it replied "
                                 f"with text only: {content[:200]!r}")
        usage = data.get("usage")
        return ToolReply(content, calls, _count(usage, "prompt_tokens"), _count(usage, "completion_tokens"),
                         choice.get("finish_reason"))

    def _no_tools(self, why: str) -> LLMError:
        return LLMError(f"the model '{self.model}' at {self.base_url} does not support tool calls ({why}); "
                        "set llm.model to a model that can call tools (and serve it with tool calling on, "
                        "e.g. llama.cpp's --jinja), or choose another answer strategy than 'agent'")

    def _tool_call(self, i: int, call: dict) -> ToolCall:
        """One ``tool_calls`` entry, its arguments decoded: a JSON object as a string (the standard),
        an object (some servers), a doubly encoded string, or nothing at all (a call without
        arguments). Anything else is malformed (``LLMError``)."""
        fn = call["function"]
        name, raw = fn["name"], fn.get("arguments")
        if not isinstance(name, str) or not name:
            raise KeyError("name")
        args: object = raw if raw not in (None, "") else {}
        try:
            for _ in range(2):  # a string that decodes to a string was encoded twice
                if isinstance(args, str):
                    args = json.loads(args)
        except ValueError as exc:
            raise LLMError(f"LLM endpoint {self.base_url} sent malformed JSON arguments for tool '{name}' "
                           f"({exc}): {str(raw)[:200]}") from None
        if not isinstance(args, dict):
            raise LLMError(f"LLM endpoint {self.base_url} sent arguments for tool '{name}' that are not a "
                           f"JSON object: {str(raw)[:200]}")
        return ToolCall(str(call.get("id") or f"call_{i}"), name, args)

    def stream(self, messages: list[dict], max_tokens: int = 512, temperature: float = 0.1) -> Iterator[str]:
        """Yield content deltas as the server streams them (server-sent events)."""
        try:
            with self._http.stream("POST", f"{self.base_url}/chat/completions",
                                   json=self._body(messages, max_tokens, temperature, True)) as resp:
                if resp.status_code != 200:
                    resp.read()
                    raise self._fail(resp)
                for line in resp.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    try:
                        event = json.loads(data)
                    except ValueError:
                        raise LLMError(f"LLM endpoint sent a malformed event: {data[:200]}") from None
                    if "error" in event:
                        raise LLMError(f"LLM endpoint error: {event['error']}")
                    for choice in event.get("choices", []):
                        piece = (choice.get("delta") or {}).get("content")
                        if piece:
                            yield piece
        except httpx.HTTPError as exc:
            raise LLMError(f"LLM endpoint {self.base_url} failed mid-stream: {exc}") from None

    def count_tokens(self, text: str) -> int | None:
        """Exact token count from the server's tokenizer, if it exposes one (llama.cpp does)."""
        root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        for url, body, key in ((f"{root}/extras/tokenize", {"input": text, "model": self.model}, "tokens"),
                               (f"{root}/tokenize", {"content": text}, "tokens")):
            try:
                resp = self._http.post(url, json=body)
            except httpx.HTTPError:
                continue
            if resp.status_code == 200:
                try:
                    return len(resp.json()[key])
                except (ValueError, KeyError, TypeError):
                    continue
        return None
