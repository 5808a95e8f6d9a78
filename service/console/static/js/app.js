// The console's shell: hash routing (#/page/arg?query), the API-key dialog, the collection picker.
import * as api from "./api.js";
import { fill, h, showError } from "./dom.js";
import * as jobs from "./pages/jobs.js";
import * as items from "./pages/items.js";
import * as models from "./pages/models.js";
import * as overview from "./pages/overview.js";
import * as playground from "./pages/playground.js";

const PAGES = { overview, jobs, models, items, playground };
const COLLECTION_STORAGE = "embedding-console.collection";
const main = document.getElementById("main");
const status = document.getElementById("status");
let stopPage = null;
let renders = 0;
let openapiPromise = null;

/** What pages share: the OpenAPI document (fetched once) and the active model's card. */
const ctx = {
  openapi() {
    openapiPromise ??= api.openapi().catch((err) => {
      openapiPromise = null;
      throw err;
    });
    return openapiPromise;
  },
  /** The card of the model serving the current collection (or the service), or null. */
  async activeCard() {
    if (api.hasCollections()) {
      const name = api.currentCollection();
      const found = ((await api.listCollections()) || []).find((c) => c.name === name);
      const modelId = found && (found.model || found.model_id);
      return modelId ? (await api.getModel(modelId)).card : null;
    }
    return (await api.info()).model;
  },
  go(hash) {
    location.hash = hash;
  },
  /** Render the current page again (after an action changed what it shows). */
  refresh: () => render(),
};

/** "#/jobs/job-1?status=running" -> {name: "jobs", args: ["job-1"], query: URLSearchParams}. */
function parseHash() {
  const [path, query = ""] = (location.hash || "#/overview").slice(2).split("?");
  const [name, ...args] = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: PAGES[name] ? name : "overview", args, query: new URLSearchParams(query) };
}

async function render() {
  if (location.hash && !location.hash.startsWith("#/")) return; // an in-page anchor, not a page
  const { name, args, query } = parseHash();
  const token = ++renders;
  if (stopPage) stopPage();
  stopPage = null;
  fill(status);
  for (const link of document.querySelectorAll("nav a[data-page]")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  // Each render writes into its own view: a slow answer for a page already left lands nowhere.
  const view = h("div", { class: "view", dataset: { page: name } });
  fill(main, view);
  try {
    const stop = await PAGES[name].render(view, { args, query, ctx });
    if (token === renders) stopPage = stop || null;
    else if (stop) stop();
  } catch (err) {
    if (token === renders) showError(status, err);
  }
  const heading = view.querySelector("h1");
  document.title = `${heading ? heading.textContent : name} · Embedding service`;
}

function setUpKeyDialog() {
  const dialog = document.getElementById("key-dialog");
  const form = document.getElementById("key-form");
  const input = document.getElementById("api-key");
  const message = document.getElementById("key-message");
  let settle = null;
  const finish = (value) => {
    if (dialog.open) dialog.close();
    if (settle) settle(value);
    settle = null;
  };
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    finish(input.value.trim() || null);
  });
  document.getElementById("key-cancel").addEventListener("click", () => finish(null));
  dialog.addEventListener("cancel", () => finish(null)); // Escape
  api.setKeyPrompt(
    (refused) =>
      new Promise((resolve) => {
        settle = resolve;
        message.textContent = refused
          ? "The service refused that API key. Enter the right one (kept for this browser tab only)."
          : "This service asks for an API key. It is kept for this browser tab only.";
        input.value = "";
        dialog.showModal();
        input.focus();
      }),
  );
}

async function setUpCollections() {
  const list = await api.detectCollections();
  const picker = document.getElementById("collection-picker");
  if (!list) return;
  const select = document.getElementById("collection");
  const saved = sessionStorage.getItem(COLLECTION_STORAGE);
  const names = list.map((c) => c.name);
  const chosen = names.includes(saved) ? saved : names.includes("default") ? "default" : names[0];
  fill(
    select,
    names.map((n) => h("option", { value: n, selected: n === chosen }, n)),
  );
  api.useCollection(chosen);
  picker.hidden = false;
  select.addEventListener("change", () => {
    api.useCollection(select.value);
    sessionStorage.setItem(COLLECTION_STORAGE, select.value);
    render();
  });
}

async function start() {
  setUpKeyDialog();
  document.getElementById("skip-link").addEventListener("click", (event) => {
    event.preventDefault(); // "#main" would read as a page name
    main.focus();
  });
  window.addEventListener("hashchange", () => {
    render().then(() => main.focus({ preventScroll: true }));
  });
  try {
    await setUpCollections();
  } catch (err) {
    showError(status, err);
  }
  await render();
}

start();
