// The ragline web UI: sign-in and collection bar, a hash router, and the three views.

import { Client } from "./api.js";
import { fill, h, say } from "./dom.js";
import { AskView } from "./ask.js";
import { LibraryView } from "./library.js";
import { EvaluationView } from "./evaluation.js";

const $ = (id) => document.getElementById(id);
const store = {
  get: (k) => localStorage.getItem(`ragline.${k}`) || "",
  set: (k, v) => (v ? localStorage.setItem(`ragline.${k}`, v) : localStorage.removeItem(`ragline.${k}`)),
};

/** What every view needs: a client (once signed in) and the chosen collection. */
export const session = {
  client: null,
  who: null,
  collection: "",
  get ready() { return Boolean(this.client && this.collection); },
};

const views = {
  ask: new AskView(session),
  library: new LibraryView(session),
  evaluation: new EvaluationView(session),
};

// -- routing -------------------------------------------------------------------------------
function currentView() {
  const name = location.hash.replace(/^#/, "");
  return name in views ? name : "ask";
}

function route() {
  const name = currentView();
  for (const link of document.querySelectorAll(".tabs a")) {
    if (link.dataset.view === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const needs = $("needs");
  let missing = "";
  if (!session.client) missing = "Sign in with an API key and a tenant to start.";
  else if (!session.collection) missing = "Create a collection (above) to start.";
  say(needs, missing, "info");
  for (const [key, view] of Object.entries(views)) {
    const active = key === name && !missing;
    $(`view-${key}`).hidden = !active;
    if (active) view.show();
    else view.hide?.();
  }
}

// -- sign-in -------------------------------------------------------------------------------
async function signIn(key, tenant) {
  const error = $("session-error");
  say(error, "");
  const client = new Client(key, tenant);
  $("signin-button").disabled = true;
  try {
    session.who = await client.whoami();
  } catch (err) {
    signedOut();
    say(error, `Sign-in failed: ${err.message}`);
    return;
  } finally {
    $("signin-button").disabled = false;
  }
  session.client = client;
  store.set("key", key);
  store.set("tenant", tenant);
  showWho();
  $("signout").hidden = false;
  $("collection-bar").hidden = false;
  await loadCollections(store.get(`collection.${tenant}`));
}

function signedOut() {
  session.client = null;
  session.who = null;
  session.collection = "";
  $("who").textContent = "";
  $("signout").hidden = true;
  $("collection-bar").hidden = true;
  route();
}

function showWho() {
  const w = session.who;
  const principals = w.principals === null ? "all documents (admin)" : w.principals.join(", ") || "none";
  fill($("who"),
    h("span", { class: "dot", "aria-hidden": "true" }),
    "Signed in to ", h("strong", {}, w.tenant), ` as ${w.admin ? "admin" : `key ${w.key_id}`} · reads as `,
    h("span", { class: "principals" }, principals));
}

async function loadCollections(wanted) {
  const select = $("collection");
  let names = [];
  try {
    names = (await session.client.collections()).collections.map((c) => c.name);
  } catch (err) {
    say($("session-error"), `Cannot list collections: ${err.message}`);
  }
  fill(select, names.map((n) => h("option", { value: n }, n)));
  select.disabled = names.length === 0;
  if (!names.length) select.append(h("option", { value: "" }, "no collection yet"));
  chooseCollection(names.includes(wanted) ? wanted : names[0] || "");
}

function chooseCollection(name) {
  session.collection = name;
  $("collection").value = name;
  if (session.client) store.set(`collection.${session.client.tenant}`, name);
  for (const view of Object.values(views)) view.reset?.();
  route();
}

// -- wiring --------------------------------------------------------------------------------
$("signin").addEventListener("submit", (e) => {
  e.preventDefault();
  signIn($("key").value.trim(), $("tenant").value.trim());
});

$("signout").addEventListener("click", () => {
  store.set("key", "");
  $("key").value = "";
  signedOut();
  $("key").focus();
});

$("collection").addEventListener("change", (e) => chooseCollection(e.target.value));

$("new-collection").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("new-collection-name");
  const name = input.value.trim();
  say($("session-error"), "");
  try {
    await session.client.createCollection(name);
  } catch (err) {
    say($("session-error"), `Cannot create collection '${name}': ${err.message}`);
    return;
  }
  input.value = "";
  await loadCollections(name);
});

window.addEventListener("hashchange", () => {
  route();
  $("main").focus({ preventScroll: true });
});

$("key").value = store.get("key");
$("tenant").value = store.get("tenant");
route();
if ($("key").value && $("tenant").value) signIn($("key").value, $("tenant").value);
else $(store.get("key") ? "tenant" : "key").focus();
