// Small DOM helpers. Text always goes in as text nodes (never innerHTML): labels, ids and metadata
// are user data.

/** h("div", {class: "x", onclick: fn}, child, "text", [more]) builds an element. */
export function h(tag, attrs = {}, ...children) {
  const el = tag.startsWith("svg:")
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const shownKeys = new WeakMap();

/**
 * Refill an element only when `key` (what it shows, as a string) changed, so a polling page keeps
 * the reader's focus, text selection and open <details> between refreshes.
 */
export function fillIfChanged(el, key, build) {
  if (shownKeys.get(el) === key) return;
  shownKeys.set(el, key);
  fill(el, build());
}

/** A table from column definitions [{label, value: row => node|text, class?}]. */
export function table(columns, rows, { caption, empty = "Nothing yet.", rowAttrs } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h(
    "table",
    {},
    caption ? h("caption", {}, caption) : null,
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        columns.map((c) => h("th", { scope: "col", class: c.class }, c.label)),
      ),
    ),
    h(
      "tbody",
      {},
      rows.map((row) =>
        h(
          "tr",
          rowAttrs ? rowAttrs(row) : {},
          columns.map((c) => h("td", { class: c.class }, c.value(row))),
        ),
      ),
    ),
  );
}

/** A definition list from [term, value] pairs (values may be nodes). */
export function dl(pairs) {
  return h(
    "dl",
    {},
    pairs.filter(([, v]) => v !== undefined).map(([term, value]) => [h("dt", {}, term), h("dd", {}, value ?? "—")]),
  );
}

export function fmtNumber(value, digits = 4) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value !== "number") return String(value);
  if (Number.isInteger(value)) return value.toLocaleString("en");
  return Math.abs(value) >= 1000 ? value.toFixed(0) : Number(value.toPrecision(digits)).toString();
}

export function fmtSeconds(seconds) {
  if (seconds === null || seconds === undefined || !Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Show a timestamp exactly as the API wrote it, in a <time> element. */
export function time(iso) {
  return iso ? h("time", { datetime: iso }, iso) : "—";
}

/**
 * Milliseconds since the epoch of an API timestamp. A string without a zone is read as UTC
 * (the service stores UTC); one with "Z" or an offset is read as written.
 */
export function parseTime(iso) {
  if (!iso) return NaN;
  return Date.parse(/([zZ]|[+-]\d\d:?\d\d)$/.test(iso) ? iso : `${iso}Z`);
}

export function statusBadge(status) {
  return h("span", { class: `badge badge-${String(status).split(":")[0]}` }, status);
}

/** A button that disables itself while its async action runs, and reports a failure in `where`. */
export function actionButton(text, action, { where, cls, label } = {}) {
  const button = h("button", { type: "button", class: cls, "aria-label": label });
  button.textContent = text;
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await action();
    } catch (err) {
      showError(where, err);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/** Put an error message in a live region (or the page's). */
export function showError(where, err) {
  const region = where || document.getElementById("status");
  fill(region, h("p", { class: "error", role: "alert" }, err && err.message ? err.message : String(err)));
}

export function showNote(where, text) {
  fill(where || document.getElementById("status"), h("p", { class: "note" }, text));
}
