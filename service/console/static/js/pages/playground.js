// Playground: drop an image, paste a vector or name an item; see its embedding, its nearest
// neighbours (with thumbnails), how /classify votes, and verify it against a chosen item.
import * as api from "../api.js";
import { dl, fill, fmtNumber, h, showError, table } from "../dom.js";
import { readAsDataUrl, thumbnail } from "../thumbs.js";
import { parseVector } from "./items.js";

let remembered = null; // the last query, kept while the tab lives: {item, ref, describe, thumb}

export async function render(view, { ctx }) {
  const card = await ctx.activeCard().catch(() => null);
  const spec = card ? card.input : null;
  const problems = h("div", { class: "status", "aria-live": "polite", id: "playground-status" });
  let query = remembered; // {item: what /embed takes, ref: what /search and /verify take, describe}
  let source = "ready"; // "vector" or "item" once that box is typed in: read it when the form is sent

  // -- input ---------------------------------------------------------------------------------------
  const preview = h("div", { class: "preview", id: "query-preview" });
  const fileInput = h("input", { type: "file", id: "query-image", accept: "image/*", class: "drop-input" });
  const drop = h(
    "label",
    { class: "drop-zone", for: "query-image", id: "drop-zone" },
    h("strong", {}, "Drop an image here"),
    h("span", {}, " or press to choose a file"),
  );
  const vectorText = h("textarea", {
    id: "query-vector",
    rows: 3,
    placeholder: spec
      ? `${spec.kind === "image" ? spec.channels * spec.height * spec.width : spec.dim} numbers`
      : "numbers",
  });
  const itemId = h("input", { id: "query-item", type: "text", placeholder: "an indexed item's id" });
  const k = h("input", { id: "query-k", type: "number", min: 1, max: 100, value: 5 });
  const weighting = h(
    "select",
    { id: "query-weighting" },
    h("option", { value: "uniform" }, "uniform"),
    h("option", { value: "distance" }, "distance"),
  );
  const runButton = h("button", { type: "submit", class: "primary", id: "run-query" }, "Embed, search and classify");

  function setQuery(next) {
    query = next;
    remembered = next;
    fill(
      preview,
      next ? [next.thumb || null, h("span", {}, next.describe)] : h("span", { class: "muted" }, "No query yet."),
    );
  }

  async function fromFile(file) {
    if (!file || !file.type.startsWith("image/")) throw new Error("drop an image file (PNG or JPEG)");
    const dataUrl = await readAsDataUrl(file);
    const item = { image: dataUrl };
    source = "ready";
    vectorText.value = "";
    itemId.value = "";
    setQuery({
      item,
      ref: item,
      describe: `image ${file.name}`,
      thumb: h("img", { src: dataUrl, class: "thumb", alt: `query image ${file.name}`, width: 48, height: 48 }),
    });
  }
  fileInput.addEventListener("change", () => fromFile(fileInput.files[0]).catch((err) => showError(problems, err)));
  drop.addEventListener("dragover", (event) => {
    event.preventDefault();
    drop.classList.add("dragging");
  });
  drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("dragging");
    fromFile(event.dataTransfer.files[0]).catch((err) => showError(problems, err));
  });

  /** The query from the input used last: a vector or an item id is read when the form is sent. */
  async function currentQuery() {
    if (source === "vector") {
      const vector = parseVector(vectorText.value);
      const item = { vector };
      setQuery({
        item,
        ref: item,
        describe: `vector of ${vector.length} values`,
        thumb: thumbnail(item, spec, "query vector"),
      });
    } else if (source === "item") {
      const id = itemId.value.trim();
      const stored = await api.getItem(id, true);
      setQuery({
        item: stored.input,
        ref: { id },
        describe: `item ${id}${stored.label ? ` (label ${stored.label})` : ""}`,
        thumb: thumbnail(stored.input, spec, `item ${id}`),
      });
    }
    source = "ready";
    if (!query) throw new Error("drop an image, paste a vector or name an item first");
    return query;
  }
  vectorText.addEventListener("input", () => {
    source = "vector";
    itemId.value = "";
  });
  itemId.addEventListener("input", () => {
    source = "item";
    vectorText.value = "";
  });

  // -- results -------------------------------------------------------------------------------------
  const embedBox = h("div", { id: "embed-result" });
  const neighboursBox = h("div", { id: "search-result" });
  const classifyBox = h("div", { id: "classify-result" });
  const verifyBox = h("div", { id: "verify-result", "aria-live": "polite" });
  const verifyA = h("input", { id: "verify-a", type: "text", placeholder: "empty: the query above" });
  const verifyB = h("input", {
    id: "verify-b",
    type: "text",
    list: "neighbour-ids",
    required: true,
    placeholder: "an item id",
  });
  const neighbourIds = h("datalist", { id: "neighbour-ids" });
  const threshold = h("input", {
    id: "verify-threshold",
    type: "number",
    step: "any",
    placeholder: card?.threshold ? `card: ${fmtNumber(card.threshold.distance)}` : "required: no calibrated threshold",
  });

  const queryForm = h(
    "form",
    { id: "query-form", "aria-labelledby": "h-query" },
    h(
      "div",
      { class: "field-grid" },
      h("div", { class: "field" }, h("span", { class: "field-label", id: "drop-label" }, "Image"), fileInput, drop),
      h("div", { class: "field" }, h("label", { for: "query-vector" }, "or a vector"), vectorText),
      h("div", { class: "field" }, h("label", { for: "query-item" }, "or an item id"), itemId),
      h(
        "div",
        { class: "field" },
        h("label", { for: "query-k" }, "Neighbours (k)"),
        k,
        h("label", { for: "query-weighting" }, "Vote weighting"),
        weighting,
      ),
    ),
    h("div", { class: "buttons" }, h("span", {}, "Query: "), preview, runButton),
  );
  queryForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    runButton.disabled = true;
    fill(problems);
    try {
      const q = await currentQuery();
      const kValue = Math.max(1, Number(k.value) || 5);
      await Promise.all([
        runEmbed(q, embedBox),
        runSearch(
          q,
          kValue,
          neighboursBox,
          spec,
          (id) => {
            verifyB.value = id;
            verifyB.focus();
          },
          neighbourIds,
        ),
        runClassify(q, kValue, weighting.value, classifyBox),
      ]);
    } catch (err) {
      showError(problems, err);
    } finally {
      runButton.disabled = false;
    }
  });

  const verifyForm = h(
    "form",
    { id: "verify-form", "aria-labelledby": "h-verify" },
    h(
      "div",
      { class: "field-grid" },
      h("div", { class: "field" }, h("label", { for: "verify-a" }, "First item id"), verifyA),
      h("div", { class: "field" }, h("label", { for: "verify-b" }, "Second item id"), verifyB, neighbourIds),
      h("div", { class: "field" }, h("label", { for: "verify-threshold" }, "Threshold (distance)"), threshold),
    ),
    h("div", { class: "buttons" }, h("button", { type: "submit", id: "run-verify" }, "Verify")),
  );
  verifyForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      const a = verifyA.value.trim() ? { id: verifyA.value.trim() } : (await currentQuery()).ref;
      const b = { id: verifyB.value.trim() };
      const t = threshold.value.trim() === "" ? null : Number(threshold.value);
      const answer = await api.verify(a, b, t);
      fill(
        verifyBox,
        h(
          "p",
          { class: `verdict ${answer.same ? "same" : "different"}`, id: "verify-verdict" },
          answer.same ? "Same" : "Different",
        ),
        dl([
          ["Distance", fmtNumber(answer.distance)],
          ["Similarity", fmtNumber(answer.similarity)],
          ["Threshold", fmtNumber(answer.threshold)],
        ]),
      );
    } catch (err) {
      showError(verifyBox, err);
    }
  });

  fill(
    view,
    h("h1", {}, "Playground"),
    card
      ? h(
          "p",
          { class: "muted" },
          `Model ${card.model_id} reads ${spec.kind === "image" ? `${spec.channels}×${spec.height}×${spec.width} images (any size is resized)` : `vectors of ${spec.dim} values`}.`,
        )
      : h("p", { class: "muted" }, "No active model: activate one on the Models page."),
    problems,
    h("section", { "aria-labelledby": "h-query" }, h("h2", { id: "h-query" }, "Query"), queryForm),
    h(
      "div",
      { class: "cards" },
      h(
        "section",
        { class: "card wide", "aria-labelledby": "h-neighbours" },
        h("h2", { id: "h-neighbours" }, "Nearest neighbours"),
        neighboursBox,
      ),
      h(
        "section",
        { class: "card", "aria-labelledby": "h-classify" },
        h("h2", { id: "h-classify" }, "Classification"),
        classifyBox,
      ),
    ),
    h("section", { "aria-labelledby": "h-embedding" }, h("h2", { id: "h-embedding" }, "Embedding"), embedBox),
    h("section", { "aria-labelledby": "h-verify" }, h("h2", { id: "h-verify" }, "Verify"), verifyForm, verifyBox),
  );
  setQuery(query);
}

async function runEmbed(q, box) {
  try {
    const answer = await api.embed([q.item]);
    const values = answer.embeddings[0];
    const norm = Math.sqrt(values.reduce((s, v) => s + v * v, 0));
    fill(
      box,
      dl([
        ["Model", answer.model],
        ["Dimension", fmtNumber(answer.dim)],
        ["L2 norm", fmtNumber(norm)],
        [
          "First values",
          values
            .slice(0, 8)
            .map((v) => fmtNumber(v, 3))
            .join(", ") + (values.length > 8 ? ", …" : ""),
        ],
      ]),
      h("details", {}, h("summary", {}, "All values"), h("pre", { class: "vector" }, JSON.stringify(values))),
    );
  } catch (err) {
    showError(box, err);
  }
}

async function runSearch(q, k, box, spec, chooseForVerify, datalist) {
  try {
    const answer = await api.search(q.ref, k);
    const thumbs = new Map(answer.neighbors.map((n) => [n.id, h("span", { class: "thumb thumb-none" }, "…")]));
    fill(
      datalist,
      answer.neighbors.map((n) => h("option", { value: n.id })),
    );
    fill(
      box,
      table(
        [
          { label: "", value: (n) => thumbs.get(n.id), class: "thumb-cell" },
          { label: "Id", value: (n) => h("code", {}, n.id) },
          { label: "Label", value: (n) => n.label ?? "—" },
          { label: "Distance", value: (n) => fmtNumber(n.distance), class: "num" },
          { label: "Similarity", value: (n) => fmtNumber(n.similarity), class: "num" },
          {
            label: "",
            value: (n) =>
              h(
                "button",
                {
                  type: "button",
                  class: "small",
                  "aria-label": `Verify with ${n.id}`,
                  onclick: () => chooseForVerify(n.id),
                },
                "Verify with this",
              ),
          },
        ],
        answer.neighbors,
        { empty: "The index is empty: add items first.", rowAttrs: (n) => ({ dataset: { neighbour: n.id } }) },
      ),
    );
    await Promise.all(
      answer.neighbors.map(async (n) => {
        const item = await api.getItem(n.id, true);
        thumbs.get(n.id).replaceWith(thumbnail(item.input, spec, `neighbour ${n.id}`));
      }),
    );
  } catch (err) {
    showError(box, err);
  }
}

async function runClassify(q, k, weighting, box) {
  try {
    const answer = await api.classify([q.item], k, weighting);
    const p = answer.predictions[0];
    fill(
      box,
      h(
        "p",
        { class: "prediction", id: "classify-label" },
        p.unknown ? "Unknown (nothing within the threshold)" : `Label ${p.label}`,
      ),
      dl([["Confidence", fmtNumber(p.confidence, 3)]]),
      table(
        [
          { label: "Label", value: ([label]) => label },
          { label: "Votes", value: ([, votes]) => fmtNumber(votes, 3), class: "num" },
        ],
        Object.entries(p.votes).sort((a, b) => b[1] - a[1]),
        { empty: "No votes." },
      ),
    );
  } catch (err) {
    showError(box, err);
  }
}
