// The HTTP API client: JSON calls, multipart uploads and the server-sent events of /ask.

const BASE = new URL("../v1/", import.meta.url); // works under a path prefix too

export class ApiError extends Error {
  constructor(message, code = "error", status = 0) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

/** An ApiError carrying the server's readable message ({"error": {"code", "message"}}). */
async function failure(res) {
  let message = `the server answered ${res.status}${res.statusText ? " " + res.statusText : ""}`;
  let code = `http_${res.status}`;
  try {
    const body = await res.json();
    if (body && body.error && body.error.message) ({ message, code } = body.error);
  } catch { /* not JSON: keep the status line */ }
  return new ApiError(message, code, res.status);
}

function networkError(err) {
  if (err.name === "AbortError") return err;
  return new ApiError(`cannot reach the server (${err.message})`, "network");
}

export class Client {
  constructor(key, tenant) {
    this.key = key;
    this.tenant = tenant;
  }

  url(...parts) {
    const path = ["tenants", this.tenant, ...parts].map(encodeURIComponent).join("/");
    return new URL(path, BASE);
  }

  headers(extra = {}) {
    return { Authorization: `Bearer ${this.key}`, ...extra };
  }

  async fetch(parts, { method = "GET", json, form, query, signal } = {}) {
    const url = this.url(...parts);
    for (const [k, v] of Object.entries(query || {})) url.searchParams.set(k, v);
    const init = { method, headers: this.headers(), signal };
    if (json !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(json);
    } else if (form !== undefined) {
      init.body = form; // the browser sets the multipart boundary
    }
    let res;
    try {
      res = await fetch(url, init);
    } catch (err) {
      throw networkError(err);
    }
    if (!res.ok) throw await failure(res);
    return res;
  }

  async call(parts, options) {
    const res = await this.fetch(parts, options);
    return res.status === 204 ? null : res.json();
  }

  whoami() { return this.call(["whoami"]); }
  collections() { return this.call(["collections"]); }
  createCollection(name) { return this.call(["collections"], { method: "POST", json: { name } }); }
  documents(c) { return this.call(["collections", c, "documents"]); }
  document(c, id) { return this.call(["collections", c, "documents", id], { query: { text: "true" } }); }
  deleteDocument(c, id) { return this.call(["collections", c, "documents", id], { method: "DELETE" }); }
  jobs(c) { return this.call(["collections", c, "jobs"]); }
  job(c, id) { return this.call(["collections", c, "jobs", id]); }
  evaluations(c) { return this.call(["collections", c, "evaluations"]); }
  evaluation(c, id) { return this.call(["collections", c, "evaluations", id]); }

  upload(c, files, acl) {
    const form = new FormData();
    for (const f of files) form.append("files", f, f.name);
    if (acl) form.append("acl", acl);
    return this.call(["collections", c, "documents"], { method: "POST", form });
  }

  /** Ask with stream: true; yields {event, data} with data parsed from JSON. */
  async *ask(c, body, signal) {
    const res = await this.fetch(["collections", c, "ask"], { method: "POST", json: { ...body, stream: true }, signal });
    for await (const ev of sseEvents(res.body)) {
      let data;
      try {
        data = ev.data ? JSON.parse(ev.data) : {};
      } catch {
        throw new ApiError("the server sent an unreadable event", "bad_event");
      }
      yield { event: ev.event, data };
    }
  }
}

/**
 * Parse a text/event-stream body (the WHATWG "server-sent events" format) read through a
 * ReadableStream reader: yields {event, data, id} for each dispatched event.
 */
export async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "", data = [], id = "";
  const line = (text) => {
    if (text === "") {
      const out = data.length ? { event: event || "message", data: data.join("\n"), id } : null;
      event = ""; data = [];
      return out;
    }
    if (text.startsWith(":")) return null; // a comment (keep-alive ping)
    const colon = text.indexOf(":");
    const field = colon < 0 ? text : text.slice(0, colon);
    let value = colon < 0 ? "" : text.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") event = value;
    else if (field === "data") data.push(value);
    else if (field === "id") id = value;
    return null;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      // a lone "\r" at the end may be the first half of "\r\n": keep it for the next chunk
      const lines = buffer.split(/\r\n|\n|\r(?!$)/);
      buffer = lines.pop();
      for (const text of lines) {
        const ev = line(text);
        if (ev) yield ev;
      }
    }
    for (const text of [...buffer.split(/\r\n|\n|\r/), ""]) {
      const ev = line(text);
      if (ev) yield ev;
    }
  } finally {
    reader.cancel().catch(() => {}); // a consumer that stops early closes the response
  }
}
