// Every HTTP call the console makes, in one place: pages never build a URL themselves.
//
// With an API key configured the service answers 401; we then ask for the key once (kept in
// sessionStorage: for this tab only), send it as "Authorization: Bearer KEY" and retry.
// Collections (GET /collections answers 200) scope the item routes under /collections/{name}/...;
// without them (404) the flat routes are the "default" collection.

const KEY_STORAGE = "embedding-console.api-key";
const MAX_KEY_PROMPTS = 3;

export class ApiError extends Error {
  constructor(status, detail) {
    super(formatDetail(detail) || `HTTP ${status}`);
    this.status = status;
    this.detail = detail;
  }
}

/** FastAPI's {"detail": ...}: a string, or a list of validation errors with their field paths. */
export function formatDetail(detail) {
  if (detail == null) return "";
  if (typeof detail === "string") return detail;
  if (Array.isArray(detail)) {
    return detail
      .map((e) => {
        const where = (e.loc || []).filter((p) => p !== "body").join(".");
        return where ? `${where}: ${e.msg}` : e.msg;
      })
      .join("; ");
  }
  return JSON.stringify(detail);
}

let askForKey = null; // set by the shell: (message) => Promise<string | null>
let keyPrompt = null; // one prompt at a time, shared by concurrent 401s

/** The shell supplies the dialog that asks for an API key. */
export function setKeyPrompt(fn) {
  askForKey = fn;
}

function promptForKey(refused) {
  if (!keyPrompt) {
    keyPrompt = askForKey(refused).finally(() => {
      keyPrompt = null;
    });
  }
  return keyPrompt;
}

export function hasKey() {
  return sessionStorage.getItem(KEY_STORAGE) !== null;
}

export function forgetKey() {
  sessionStorage.removeItem(KEY_STORAGE);
}

async function send(method, path, { json, form, query } = {}) {
  const params = new URLSearchParams();
  for (const [name, value] of Object.entries(query || {})) {
    if (value !== undefined && value !== null && value !== "") params.set(name, String(value));
  }
  const url = params.toString() ? `${path}?${params}` : path;
  for (let prompts = 0; ; prompts++) {
    const key = sessionStorage.getItem(KEY_STORAGE);
    const headers = { Accept: "application/json" };
    if (key) headers.Authorization = `Bearer ${key}`;
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form; // FormData: the browser writes the multipart boundary
    }
    const response = await fetch(url, { method, headers, body });
    if (response.status === 401 && askForKey && prompts < MAX_KEY_PROMPTS) {
      const entered = await promptForKey(key !== null);
      if (!entered) throw new ApiError(401, "this service needs an API key");
      sessionStorage.setItem(KEY_STORAGE, entered);
      continue;
    }
    if (!response.ok) {
      let detail = null;
      try {
        detail = (await response.json()).detail;
      } catch {
        detail = response.statusText;
      }
      throw new ApiError(response.status, detail);
    }
    return response;
  }
}

const getJson = async (path, query) => (await send("GET", path, { query })).json();
const postJson = async (path, json, query) => {
  const response = await send("POST", path, { json, query });
  return response.status === 204 ? null : response.json();
};
const enc = encodeURIComponent;

// -- collections ---------------------------------------------------------------------------------
let collectionsAvailable = false;
let collection = null;

/** Ask once whether this service has collections; a 404 means the flat routes only. */
export async function detectCollections() {
  try {
    const answer = await getJson("/collections");
    collectionsAvailable = true;
    return Array.isArray(answer) ? answer : answer.collections || [];
  } catch (err) {
    if (err.status === 404 || err.status === 405) {
      collectionsAvailable = false;
      return null;
    }
    throw err;
  }
}

export const hasCollections = () => collectionsAvailable;
export const currentCollection = () => collection;
export function useCollection(name) {
  collection = name || null;
}

/** The path of an item-level route, inside the chosen collection when there are collections. */
function scoped(path) {
  return collectionsAvailable && collection ? `/collections/${enc(collection)}${path}` : path;
}

export const listCollections = () => detectCollections();
export const collectionHistory = (name) => getJson(`/collections/${enc(name)}/history`);
export const rollbackCollection = (name) => postJson(`/collections/${enc(name)}/rollback`, {});

// -- service --------------------------------------------------------------------------------------
export const health = () => getJson("/health");
export const info = () => getJson("/info");
export const openapi = () => getJson("/openapi.json");
export async function metricsText() {
  return (await send("GET", "/metrics")).text();
}

// -- training -------------------------------------------------------------------------------------
export const listJobs = (query) => getJson("/jobs", query);
export const getJob = (id) => getJson(`/jobs/${enc(id)}`);
export const cancelJob = (id) => postJson(`/jobs/${enc(id)}/cancel`, {});
export const train = (config) => postJson("/train", config);
export const listDatasets = () => getJson("/datasets");
export async function uploadDataset(file, labelColumn) {
  const form = new FormData();
  form.append("file", file);
  if (labelColumn) form.append("label_column", labelColumn);
  return (await send("POST", "/datasets", { form })).json();
}

// -- models ---------------------------------------------------------------------------------------
export const listModels = () => getJson("/models");
export const getModel = (id) => getJson(`/models/${enc(id)}`);
export const modelReport = (id) => getJson(`/models/${enc(id)}/report`);
/** Activate a model: in the chosen collection when there are collections, else service-wide. */
export function activateModel(id, force = false) {
  if (collectionsAvailable && collection) {
    return postJson(`/collections/${enc(collection)}/activate`, { model: id, ...(force ? { force } : {}) });
  }
  return postJson(`/models/${enc(id)}/activate`, {});
}

/** A report file (a plot) as an object URL: <img> cannot send the API key, fetch can. */
export async function fileObjectUrl(url) {
  if (!url.startsWith("/models/")) throw new ApiError(400, `not a model file: ${url}`);
  const blob = await (await send("GET", url)).blob();
  return URL.createObjectURL(blob);
}

// -- items and queries ----------------------------------------------------------------------------
export const listItems = (query) => getJson(scoped("/items"), query);
export const getItem = (id, includeInput = false) =>
  getJson(scoped(`/items/${enc(id)}`), includeInput ? { include_input: true } : undefined);
export const deleteItem = (id) => send("DELETE", scoped(`/items/${enc(id)}`));
export const addItems = (items, upsert = false) =>
  postJson(scoped("/items"), { items }, upsert ? { upsert } : undefined);
export const embed = (items) => postJson(scoped("/embed"), { items });
export const search = (item, k, label) => postJson(scoped("/search"), { item, k, ...(label ? { label } : {}) });
export const classify = (items, k, weighting) => postJson(scoped("/classify"), { items, k, weighting });
export const verify = (a, b, threshold) =>
  postJson(scoped("/verify"), { a, b, ...(threshold != null ? { threshold } : {}) });
