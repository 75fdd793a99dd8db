// Evaluation: the latest (or a chosen) evaluation report of the collection.

import { fill, fmtDate, h, plural, say } from "./dom.js";

const $ = (id) => document.getElementById(id);

const ANSWER_METRICS = {
  faithfulness: ["Faithfulness", "share of answer statements supported by the retrieved passages", "higher"],
  hallucination_rate: ["Hallucination rate", "share of answers with an unsupported statement", "lower"],
  citation_accuracy: ["Citation accuracy", "share of citations whose passage supports the statement", "higher"],
  context_precision: ["Context precision", "share of retrieved passages the answer used", "higher"],
  abstention_rate: ["Abstention rate", "share of questions the system declined to answer", ""],
  correct_abstention_rate: ["Correct abstentions", "unanswerable questions that were declined", "higher"],
  wrong_abstention_rate: ["Wrong abstentions", "answerable questions that were declined", "lower"],
  answer_relevance: ["Answer relevance", "how well the answer addresses the question", "higher"],
  context_recall: ["Context recall", "share of the reference answer found in the passages", "higher"],
};

export class EvaluationView {
  constructor(session) {
    this.session = session;
    this.generation = 0;
    $("refresh-evaluation").addEventListener("click", () => this.show());
    $("eval-pick").addEventListener("change", (e) => this.load(e.target.value));
  }

  reset() {
    this.generation++;
    fill($("eval-report"));
    $("eval-empty").hidden = true;
    $("eval-pick-label").hidden = true;
    say($("eval-error"), "");
    say($("eval-running"), "", "info");
  }

  async show() {
    const { client, collection } = this.session;
    const gen = ++this.generation;
    say($("eval-error"), "");
    let list, jobs;
    try {
      [list, jobs] = await Promise.all([client.evaluations(collection), client.jobs(collection)]);
    } catch (err) {
      if (gen === this.generation) say($("eval-error"), `Cannot load the evaluations: ${err.message}`);
      return;
    }
    if (gen !== this.generation) return;
    const running = jobs.jobs.filter((j) => j.kind === "evaluation" && ["queued", "running"].includes(j.status));
    say($("eval-running"), running.length
      ? `An evaluation is running (${running[0].done} of ${plural(running[0].total, "question")}); refresh to see it when done.`
      : "", "info");
    const runs = list.evaluations;
    $("eval-empty").hidden = runs.length !== 0;
    $("eval-pick-label").hidden = runs.length < 2;
    fill($("eval-pick"), runs.map((r) => h("option", { value: r.id }, `${fmtDate(r.created)} · ${r.judge}`)));
    if (!runs.length) {
      fill($("eval-report"));
      return;
    }
    await this.load(runs[0].id);
  }

  async load(id) {
    const { client, collection } = this.session;
    const gen = ++this.generation;
    let report;
    try {
      report = await client.evaluation(collection, id);
    } catch (err) {
      if (gen === this.generation) say($("eval-error"), `Cannot load evaluation ${id}: ${err.message}`);
      return;
    }
    if (gen !== this.generation) return;
    $("eval-pick").value = id;
    fill($("eval-report"), renderReport(report));
  }
}

function renderReport(r) {
  const counts = r.counts || {};
  const answers = Object.entries(r.answers || {});
  const retrieval = r.retrieval ? Object.entries(r.retrieval) : [];
  return [
    h("p", { class: "judge", title: "scores depend on the judge and its version" }, h("strong", {}, "Judge: "), r.judge),
    h("p", { class: "meta report-meta" }, `${fmtDate(r.created)} · k = ${r.k} · ${r.mode} retrieval · run ${r.id}`),
    h("div", { class: "cards" },
      card("Questions", counts.items),
      card("Answered", counts.answered),
      card("Abstained", counts.abstained),
      card("Latency p50", ms(r.latency_ms?.p50)),
      card("Latency p95", ms(r.latency_ms?.p95))),
    h("div", { class: "two-col" },
      h("section", { "aria-labelledby": "answer-metrics-title" },
        h("h2", { id: "answer-metrics-title" }, "Answer quality"),
        table(["Metric", "Value", "Better"], answers.map(([name, value]) => {
          const [label, help, better] = ANSWER_METRICS[name] || [name, "", ""];
          return [h("span", { title: help }, label), metric(value), better];
        }), "metrics")),
      h("section", { "aria-labelledby": "retrieval-metrics-title" },
        h("h2", { id: "retrieval-metrics-title" }, "Retrieval"),
        retrieval.length
          ? table(["Metric", "Value"], retrieval.map(([name, value]) => [name, metric(value)]), "metrics")
          : h("p", { class: "hint" }, "No question named its relevant documents, so retrieval was not scored."),
        h("h2", { class: "spaced" }, "Counts"),
        h("dl", { class: "counts" }, Object.entries(counts).flatMap(([k, v]) => [h("dt", {}, k.replaceAll("_", " ")),
          h("dd", {}, String(v))])))),
    h("section", { "aria-labelledby": "per-question-title" },
      h("h2", { id: "per-question-title" }, "Per question"),
      table(["Question", "Answer", "Grounded", "Faithfulness", "Sources", "Latency"], (r.items || []).map((it) => [
        h("span", {}, h("span", { class: "id" }, it.id), " ", it.question),
        h("span", { class: "clip" }, it.answer),
        it.grounded ? "yes" : h("span", { class: "badge warn" }, "no"),
        metric(it.judgement?.faithfulness),
        (it.sources || []).join(", ") || "—",
        ms(it.latency_ms),
      ]), "items")),
  ];
}

function card(label, value) {
  return h("div", { class: "card" }, h("div", { class: "card-value" }, value ?? "—"), h("div", { class: "card-label" }, label));
}

function metric(value) {
  return value === null || value === undefined
    ? h("span", { class: "na", title: "no question defines this value" }, "n/a")
    : typeof value === "number" ? value.toFixed(3) : String(value);
}

function ms(value) {
  return value === null || value === undefined ? "—" : `${Math.round(value)} ms`;
}

function table(headers, rows, cls) {
  return h("div", { class: "table-wrap" }, h("table", { class: `table ${cls}` },
    h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c)))))));
}
