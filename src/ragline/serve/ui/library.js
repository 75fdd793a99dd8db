// Library: the collection's documents, uploads by drag and drop or file picker, job progress.

import { fill, fmtDate, fmtSize, h, plural, say } from "./dom.js";

const $ = (id) => document.getElementById(id);
const POLL_MS = 400;
const RUNNING = new Set(["queued", "running"]);

export class LibraryView {
  constructor(session) {
    this.session = session;
    this.tracked = new Map(); // job id -> its <li>
    this.generation = 0; // bumped when the collection changes: stale polls stop
    const zone = $("dropzone");
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (e) => {
        if (!hasFiles(e)) return;
        e.preventDefault();
        e.dataTransfer.dropEffect = "copy";
        zone.classList.add("over");
      });
    }
    zone.addEventListener("dragleave", (e) => {
      if (!zone.contains(e.relatedTarget)) zone.classList.remove("over");
    });
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      this.upload([...(e.dataTransfer?.files || [])]);
    });
    zone.addEventListener("click", (e) => {
      if (!e.target.closest("label, input")) $("file-input").click();
    });
    // a file dropped beside the zone must not make the browser navigate away to it
    window.addEventListener("dragover", (e) => hasFiles(e) && e.preventDefault());
    window.addEventListener("drop", (e) => hasFiles(e) && e.preventDefault());
    $("file-input").addEventListener("change", (e) => {
      this.upload([...e.target.files]);
      e.target.value = "";
    });
    $("upload-form").addEventListener("submit", (e) => e.preventDefault());
    $("refresh-documents").addEventListener("click", () => this.refresh());
  }

  show() {
    this.refresh();
    this.resume();
  }

  reset() {
    this.generation++;
    this.tracked.clear();
    fill($("jobs"));
    fill($("documents").tBodies[0]);
    say($("upload-error"), "");
    say($("library-error"), "");
  }

  async refresh() {
    const { client, collection } = this.session;
    if (!client || !collection) return;
    const gen = this.generation;
    say($("library-error"), "");
    $("library-status").textContent = "Loading…";
    let docs;
    try {
      docs = (await client.documents(collection)).documents;
    } catch (err) {
      if (gen !== this.generation) return;
      $("library-status").textContent = "";
      say($("library-error"), `Cannot list the documents: ${err.message}`);
      return;
    }
    if (gen !== this.generation) return;
    docs.sort((a, b) => a.name.localeCompare(b.name));
    $("library-status").textContent = `${plural(docs.length, "document")} in ${collection}`;
    fill($("documents").tBodies[0], docs.map((d) => this.row(d)));
    $("documents").hidden = docs.length === 0;
    $("documents-empty").hidden = docs.length !== 0;
  }

  row(d) {
    const acl = d.acl.length ? d.acl : ["*"];
    return h("tr", { dataset: { id: d.id } },
      h("th", { scope: "row", class: "name" }, h("span", { title: d.title || d.name }, d.name)),
      h("td", {}, d.type),
      h("td", { class: "num" }, String(d.chunks)),
      h("td", { class: "num" }, fmtSize(d.size)),
      h("td", { class: "acl" }, acl.map((p) => h("span", { class: "chip" }, p === "*" ? "everyone" : p))),
      h("td", {}, fmtDate(d.updated)),
      h("td", { class: "actions" },
        h("button", { type: "button", class: "danger quiet", "aria-label": `Delete ${d.name}`,
          onclick: (e) => this.remove(d, e.currentTarget) }, "Delete")));
  }

  async remove(doc, button) {
    if (!(await confirmDialog(`Delete '${doc.name}' from ${this.session.collection}? Its passages will no longer be `
      + "searched or cited."))) {
      button.focus();
      return;
    }
    say($("library-error"), "");
    button.disabled = true;
    try {
      await this.session.client.deleteDocument(this.session.collection, doc.id);
    } catch (err) {
      button.disabled = false;
      say($("library-error"), `Cannot delete '${doc.name}': ${err.message}`);
      return;
    }
    await this.refresh();
    $("library-status").textContent = `Deleted ${doc.name}. ${$("library-status").textContent}`;
    $("refresh-documents").focus();
  }

  async upload(files) {
    const { client, collection } = this.session;
    if (!files.length || !client || !collection) return;
    say($("upload-error"), "");
    const acl = $("acl").value.trim();
    const gen = this.generation;
    let job;
    try {
      job = (await client.upload(collection, files, acl)).job;
    } catch (err) {
      say($("upload-error"), `Upload failed: ${err.message}`);
      return;
    }
    if (gen === this.generation) this.track(job);
  }

  /** Pick up this collection's ingestion jobs still running (e.g. after a reload). */
  async resume() {
    const { client, collection } = this.session;
    const gen = this.generation;
    try {
      const { jobs } = await client.jobs(collection);
      if (gen !== this.generation) return;
      for (const job of jobs.reverse()) {
        if (job.kind !== "evaluation" && RUNNING.has(job.status) && !this.tracked.has(job.id)) this.track(job);
      }
    } catch { /* the list of documents shows its own error */ }
  }

  async track(job) {
    const li = h("li", { class: "job", dataset: { id: job.id } });
    this.tracked.set(job.id, li);
    $("jobs").prepend(li);
    const gen = this.generation;
    const { client, collection } = this.session;
    this.renderJob(li, job);
    while (RUNNING.has(job.status)) {
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      if (gen !== this.generation) return;
      try {
        job = await client.job(collection, job.id);
      } catch (err) {
        this.renderJob(li, job, `Lost track of this upload: ${err.message}`);
        return;
      }
      this.renderJob(li, job);
    }
    if (gen === this.generation) await this.refresh();
  }

  renderJob(li, job, problem = "") {
    const running = RUNNING.has(job.status);
    const failed = job.errors.length;
    const ok = Math.max(0, job.total - failed);
    let summary;
    if (job.status === "queued") summary = "Waiting to start…";
    else if (running) summary = `Indexing… ${job.done} of ${job.total}`;
    else if (job.status === "succeeded") summary = `Done: ${plural(ok, "file")} indexed`;
    else if (job.status === "partial") summary = `Done with problems: ${ok} of ${job.total} indexed, ${failed} failed`;
    else if (job.status === "cancelled") summary = "Cancelled";
    else summary = "Failed: no file indexed";
    li.dataset.status = job.status;
    const label = `Upload of ${plural(job.total, "file")}`;
    const bar = h("progress", { max: 1, value: job.progress, "aria-label": label });
    fill(li,
      h("div", { class: "job-head" },
        h("span", { class: "job-files" }, job.files.join(", ")),
        h("span", { class: `job-status ${job.status}`, role: "status" }, summary)),
      bar,
      failed > 0 && h("ul", { class: "job-errors", "aria-label": "Files that failed" },
        job.errors.map((e) => h("li", {}, h("strong", {}, e.file || "upload"), `: ${e.reason}`))),
      problem && h("p", { class: "alert" }, problem));
    if (!running && !failed) {
      // a finished, clean upload fades away after a while: the document list shows the result
      setTimeout(() => { if (li.dataset.status === "succeeded") li.classList.add("settled"); }, 8000);
    }
  }
}

function hasFiles(e) {
  return Boolean(e.dataTransfer && [...e.dataTransfer.types].includes("Files"));
}

/** Ask to confirm in the page's <dialog>; resolves to true for the confirming button. */
function confirmDialog(text) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}
