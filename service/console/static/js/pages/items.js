// Items: a paginated list with a label filter, thumbnails, delete; and a form to add one item.
import * as api from "../api.js";
import { actionButton, fill, h, showError, showNote, table, time } from "../dom.js";
import { readAsDataUrl, thumbnail } from "../thumbs.js";

const PAGE_SIZES = [10, 20, 50, 100];

/** State lives in the hash (#/items?label=3&offset=20&limit=20), so Back and reload keep it. */
function hashFor(state) {
  const q = new URLSearchParams();
  if (state.label) q.set("label", state.label);
  if (state.offset) q.set("offset", String(state.offset));
  if (state.limit !== 20) q.set("limit", String(state.limit));
  const text = q.toString();
  return `#/items${text ? `?${text}` : ""}`;
}

/** Parse a pasted vector: a JSON list, or numbers separated by commas, spaces or new lines. */
export function parseVector(text) {
  const trimmed = text.trim();
  const values = trimmed.startsWith("[")
    ? JSON.parse(trimmed)
    : trimmed
        .split(/[\s,;]+/)
        .filter(Boolean)
        .map(Number);
  if (!Array.isArray(values) || !values.length || !values.every((v) => typeof v === "number" && Number.isFinite(v))) {
    throw new Error("a vector is a list of numbers, e.g. [0.1, 0.2, 0.3] or 0.1 0.2 0.3");
  }
  return values;
}

export async function render(view, { query, ctx }) {
  const state = {
    label: query.get("label") || "",
    offset: Math.max(0, Number(query.get("offset")) || 0),
    limit: PAGE_SIZES.includes(Number(query.get("limit"))) ? Number(query.get("limit")) : 20,
  };
  const problems = h("div", { class: "status", "aria-live": "polite" });
  const [page, card] = await Promise.all([
    api.listItems({ label: state.label, limit: state.limit, offset: state.offset }),
    ctx.activeCard().catch(() => null),
  ]);
  const spec = card ? card.input : null;

  const labelInput = h("input", { id: "filter-label", type: "search", value: state.label, placeholder: "any label" });
  const sizeSelect = h(
    "select",
    { id: "page-size" },
    PAGE_SIZES.map((n) => h("option", { value: n, selected: n === state.limit }, String(n))),
  );
  const filter = h(
    "form",
    { class: "inline-form", role: "search", "aria-label": "Filter items" },
    h("label", { for: "filter-label" }, "Label"),
    labelInput,
    h("label", { for: "page-size" }, "Per page"),
    sizeSelect,
    h("button", { type: "submit" }, "Apply"),
  );
  filter.addEventListener("submit", (event) => {
    event.preventDefault();
    ctx.go(hashFor({ label: labelInput.value.trim(), offset: 0, limit: Number(sizeSelect.value) }));
  });

  const first = page.total ? state.offset + 1 : 0;
  const last = state.offset + page.items.length;
  const pager = h(
    "nav",
    { class: "pager", "aria-label": "Pages of items" },
    h(
      "button",
      {
        type: "button",
        disabled: state.offset === 0,
        onclick: () => ctx.go(hashFor({ ...state, offset: Math.max(0, state.offset - state.limit) })),
      },
      "← Previous",
    ),
    h(
      "span",
      { id: "items-range" },
      `${first}–${last} of ${page.total}${state.label ? ` labelled “${state.label}”` : ""}`,
    ),
    h(
      "button",
      {
        type: "button",
        disabled: last >= page.total,
        onclick: () => ctx.go(hashFor({ ...state, offset: state.offset + state.limit })),
      },
      "Next →",
    ),
  );

  const thumbs = new Map(page.items.map((item) => [item.id, h("span", { class: "thumb thumb-none" }, "…")]));
  fill(
    view,
    h("h1", {}, "Items"),
    problems,
    filter,
    pager,
    table(
      [
        { label: "", value: (i) => thumbs.get(i.id), class: "thumb-cell" },
        { label: "Id", value: (i) => h("code", {}, i.id) },
        { label: "Label", value: (i) => i.label ?? "—" },
        { label: "Metadata", value: (i) => (i.metadata ? JSON.stringify(i.metadata) : "—") },
        { label: "Model", value: (i) => i.model },
        { label: "Added", value: (i) => time(i.created_at) },
        {
          label: "",
          value: (i) =>
            actionButton(
              "Delete",
              async () => {
                if (!window.confirm(`Delete item ${i.id}?`)) return;
                await api.deleteItem(i.id);
                await ctx.refresh();
                showNote(document.getElementById("status"), `Deleted ${i.id}.`);
              },
              { where: problems, cls: "danger small", label: `Delete item ${i.id}` },
            ),
        },
      ],
      page.items,
      {
        empty: state.label ? "No items with that label." : "No items yet: add some below or with POST /items.",
        rowAttrs: (i) => ({ dataset: { item: i.id } }),
      },
    ),
    addItemSection(ctx),
  );

  // Thumbnails: one GET /items/{id}?include_input=true per row, all at once.
  await Promise.all(
    page.items.map(async (item) => {
      try {
        const full = await api.getItem(item.id, true);
        thumbs.get(item.id).replaceWith(thumbnail(full.input, spec, `item ${item.id}`));
      } catch (err) {
        thumbs.get(item.id).textContent = "?";
        thumbs.get(item.id).title = err.message;
      }
    }),
  );
}

function addItemSection(ctx) {
  const status = h("div", { class: "status", "aria-live": "polite", id: "add-item-status" });
  const id = h("input", {
    id: "new-item-id",
    type: "text",
    placeholder: "generated when empty",
    pattern: "[^\\s\\/]+",
  });
  const label = h("input", { id: "new-item-label", type: "text" });
  const file = h("input", { id: "new-item-image", type: "file", accept: "image/png,image/jpeg" });
  const vector = h("textarea", {
    id: "new-item-vector",
    rows: 2,
    placeholder: "[0.1, 0.2, …] — used when no image is chosen",
  });
  const button = h("button", { type: "submit", class: "primary" }, "Add item");
  const form = h(
    "form",
    { id: "add-item-form", "aria-labelledby": "h-add-item" },
    h(
      "div",
      { class: "field-grid" },
      h("div", { class: "field" }, h("label", { for: "new-item-image" }, "Image (PNG or JPEG)"), file),
      h("div", { class: "field" }, h("label", { for: "new-item-vector" }, "or a vector"), vector),
      h("div", { class: "field" }, h("label", { for: "new-item-id" }, "New item's id"), id),
      h("div", { class: "field" }, h("label", { for: "new-item-label" }, "New item's label"), label),
    ),
    h("div", { class: "buttons" }, button),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    button.disabled = true;
    try {
      const item = {};
      if (file.files.length) item.image = await readAsDataUrl(file.files[0]);
      else if (vector.value.trim()) item.vector = parseVector(vector.value);
      else throw new Error("choose an image or paste a vector");
      if (id.value.trim()) item.id = id.value.trim();
      if (label.value.trim()) item.label = label.value.trim();
      const { ids } = await api.addItems([item]);
      await ctx.refresh();
      showNote(document.getElementById("status"), `Added item ${ids[0]}.`);
    } catch (err) {
      showError(status, err);
    } finally {
      button.disabled = false;
    }
  });
  return h("section", { "aria-labelledby": "h-add-item" }, h("h2", { id: "h-add-item" }, "Add an item"), status, form);
}
