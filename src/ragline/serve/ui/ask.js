// Ask: a question, the answer streamed in, numbered citations and the cited passage in its document.

import { ApiError } from "./api.js";
import { fill, h, say } from "./dom.js";

const $ = (id) => document.getElementById(id);

export class AskView {
  constructor(session) {
    this.session = session;
    this.controller = null;
    this.docs = new Map(); // document id -> its record with text (per collection)
    this.opener = null; // the citation button that opened the panel, to give focus back
    $("ask-form").addEventListener("submit", (e) => {
      e.preventDefault();
      this.ask($("question").value.trim());
    });
    $("question").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
        e.preventDefault();
        $("ask-form").requestSubmit();
      }
    });
    $("doc-close").addEventListener("click", () => this.closeDocument());
    $("doc-panel").addEventListener("keydown", (e) => {
      if (e.key === "Escape") this.closeDocument();
    });
  }

  show() {
    if (document.activeElement === document.body) $("question").focus();
  }

  reset() {
    this.controller?.abort();
    this.docs.clear();
    $("answer-box").hidden = true;
    say($("ask-error"), "");
    this.closeDocument(false);
  }

  async ask(question) {
    if (!question || !this.session.ready) return;
    this.controller?.abort();
    const controller = (this.controller = new AbortController());
    const answer = $("answer");
    const button = $("ask-button");
    say($("ask-error"), "");
    fill($("answer-badges"));
    fill($("sources"));
    fill($("steps"));
    $("steps-box").hidden = true;
    const strategy = $("strategy").value;
    $("sources-title").hidden = true;
    fill(answer, h("span", { class: "thinking" }, "Searching your documents…"));
    answer.classList.add("streaming");
    answer.setAttribute("aria-busy", "true");
    const box = $("answer-box");
    box.hidden = false;
    box.dataset.state = "streaming";
    button.disabled = true;
    this.docs.clear(); // documents may have changed since the last question
    let streamed = "";
    let final = null;
    try {
      const body = strategy ? { question, k: 5, strategy } : { question, k: 5 };
      for await (const { event, data } of this.session.client.ask(this.session.collection, body, controller.signal)) {
        if (event === "step") {
          this.step(data);
        } else if (event === "token") {
          if (!streamed) fill(answer);
          streamed += data.text || "";
          answer.append(document.createTextNode(data.text || ""));
        } else if (event === "answer") {
          final = data;
        } else if (event === "error") {
          throw new ApiError(data.message || "the answer failed", data.code);
        } else if (event === "done") {
          break;
        }
      }
      if (!final) throw new ApiError("the answer stream ended before the answer was complete", "incomplete");
      this.render(final);
      box.dataset.state = "done";
    } catch (err) {
      if (err.name === "AbortError") return;
      box.dataset.state = "error";
      if (!streamed) box.hidden = true;
      say($("ask-error"), `The question could not be answered: ${err.message}`);
    } finally {
      if (this.controller === controller) {
        answer.classList.remove("streaming");
        answer.removeAttribute("aria-busy");
        button.disabled = false;
      }
    }
  }

  /** One step of a strategy (corrective, self-check, agent) as it happens. */
  step(data) {
    const { kind, at_ms: at, ...detail } = data;
    const text = Object.entries(detail)
      .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join(", ");
    $("steps-box").hidden = false;
    $("steps-box").open = true;
    $("steps").append(h("li", { dataset: { kind } }, h("strong", {}, kind), " ",
      h("span", { class: "meta" }, `${Math.round(at)} ms`), text && ` — ${text.slice(0, 300)}`));
  }

  /** The final answer: its text with [n] marks as buttons, then the numbered sources. */
  render(result) {
    const byN = new Map(result.citations.map((c) => [c.n, c]));
    const parts = [];
    let last = 0;
    for (const m of result.answer.matchAll(/\[(\d+)\]/g)) {
      const citation = byN.get(Number(m[1]));
      if (!citation) continue;
      parts.push(result.answer.slice(last, m.index), this.citeButton(citation));
      last = m.index + m[0].length;
    }
    parts.push(result.answer.slice(last));
    fill($("answer"), parts);
    $("answer").classList.toggle("ungrounded", !result.grounded);
    fill($("answer-badges"),
      !result.grounded && h("span", { class: "badge warn" }, "not grounded in the documents"),
      result.cached && h("span", { class: "badge" }, "cached"),
      result.generator && h("span", { class: "badge quiet" }, result.generator));
    $("sources-title").hidden = result.citations.length === 0;
    fill($("sources"), result.citations.map((c) => h("li", { value: c.n },
      h("button", { type: "button", class: "source-link", dataset: { n: c.n }, onclick: (e) => this.open(c, e.currentTarget) },
        h("span", { class: "source-name" }, c.source),
        where(c) && h("span", { class: "meta" }, ` · ${where(c)}`)),
      c.snippet && h("blockquote", {}, c.snippet))));
  }

  citeButton(c) {
    return h("button", {
      type: "button", class: "cite", dataset: { n: c.n }, title: `Open source ${c.n}: ${c.source}`,
      "aria-label": `Citation ${c.n}: ${c.source}`, onclick: (e) => this.open(c, e.currentTarget),
    }, `[${c.n}]`);
  }

  /** Open the cited document beside the answer, the cited span highlighted and in view. */
  async open(c, opener) {
    this.opener = opener;
    const panel = $("doc-panel");
    const text = $("doc-text");
    panel.hidden = false;
    panel.dataset.document = c.document_id;
    $("doc-title").textContent = c.source;
    $("doc-meta").textContent = [`Citation [${c.n}]`, where(c)].filter(Boolean).join(" · ");
    say($("doc-error"), "");
    fill(text, h("span", { class: "thinking" }, "Loading the document…"));
    for (const btn of document.querySelectorAll(".cite, .source-link")) {
      btn.classList.toggle("active", Number(btn.dataset.n) === c.n);
    }
    const collection = this.session.collection;
    let doc = this.docs.get(c.document_id);
    try {
      if (!doc) {
        doc = await this.session.client.document(collection, c.document_id);
        this.docs.set(c.document_id, doc);
      }
    } catch (err) {
      fill(text);
      say($("doc-error"), `Cannot open '${c.source}': ${err.message}`);
      panel.focus();
      return;
    }
    if (panel.dataset.document !== c.document_id) return; // another citation was opened meanwhile
    const body = doc.text || "";
    const [start, end] = clampSpan(c.span, body.length);
    const mark = h("mark", { id: "cited" }, body.slice(start, end));
    fill(text, body.slice(0, start), mark, body.slice(end));
    panel.focus({ preventScroll: true });
    mark.scrollIntoView({ block: "center", behavior: "instant" });
  }

  closeDocument(restoreFocus = true) {
    const panel = $("doc-panel");
    if (panel.hidden) return;
    panel.hidden = true;
    delete panel.dataset.document;
    fill($("doc-text"));
    for (const btn of document.querySelectorAll(".cite.active, .source-link.active")) btn.classList.remove("active");
    if (restoreFocus && this.opener?.isConnected) this.opener.focus();
  }
}

function where(c) {
  const parts = [];
  if (c.page !== null && c.page !== undefined) parts.push(`page ${c.page}`);
  if (c.heading_path && c.heading_path.length) parts.push(c.heading_path.join(" › "));
  return parts.join(" · ");
}

function clampSpan(span, length) {
  const [a, b] = Array.isArray(span) ? span : [0, 0];
  const start = Math.max(0, Math.min(Number(a) || 0, length));
  return [start, Math.max(start, Math.min(Number(b) || 0, length))];
}
