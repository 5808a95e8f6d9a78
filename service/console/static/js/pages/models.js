// Models: the registry, a model's card and report plots, two models side by side, activation
// (and, with collections, rollback and the activation history of the chosen collection).
import * as api from "../api.js";
import { actionButton, dl, fill, fmtNumber, h, showError, showNote, statusBadge, table, time } from "../dom.js";

const ACTIVATION_POLL_MS = 700;
const ACTIVATION_WAIT_MS = 30 * 60 * 1000; // re-embedding millions of items takes a while; then stop asking

export async function render(view, { args, query, ctx }) {
  if (args[0]) return renderModel(view, args[0], ctx);
  return renderList(view, query, ctx);
}

/** Render the page again (through the shell, so the old one is cleaned up), then say what happened. */
async function rerender(ctx, message) {
  await ctx.refresh();
  if (message) showNote(document.getElementById("status"), message);
}

const modelLink = (id) => h("a", { href: `#/models/${encodeURIComponent(id)}` }, id);

/** Is this model the one serving (the chosen collection, with collections)? */
async function activeModelId() {
  if (api.hasCollections()) {
    const found = ((await api.listCollections()) || []).find((c) => c.name === api.currentCollection());
    return found ? found.model || found.model_id || null : null;
  }
  return (await api.info()).model?.model_id ?? null;
}

function inputText(input) {
  if (!input) return "—";
  if (input.kind === "image")
    return `image ${input.channels}×${input.height}×${input.width}, pixel values 0–${fmtNumber(input.max_value)}`;
  return `vector of ${input.dim} values`;
}

/** "name (key=value, ...)": a loss or an encoder with its parameters. */
function lossText(loss) {
  if (!loss) return "—";
  const { name, ...params } = loss;
  const text = Object.entries(params)
    .map(([k, v]) => `${k}=${typeof v === "object" ? JSON.stringify(v) : v}`)
    .join(", ");
  return h("span", {}, h("strong", {}, name), text ? ` (${text})` : "");
}

/** Start an activation and follow it until the model serves (or the activation fails). */
async function activateAndWait(id, note) {
  const answer = await api.activateModel(id);
  showNote(note, `Activating ${id}: re-embedding the stored items…`);
  if (answer && answer.status === "active") return;
  const deadline = Date.now() + ACTIVATION_WAIT_MS;
  while (Date.now() < deadline) {
    await new Promise((resolve) => setTimeout(resolve, ACTIVATION_POLL_MS));
    const model = await api.getModel(id);
    const serving = api.hasCollections() ? (await activeModelId()) === id : model.active;
    const a = model.activation;
    if (serving || (a && a.status === "done")) return; // done: active, or already replaced by another
    if (a && a.status === "failed") throw new Error(`activation of ${id} failed: ${a.error}`);
    if (a && a.total) showNote(note, `Activating ${id}: ${a.done} of ${a.total} items re-embedded…`);
  }
  throw new Error(`${id} is still activating: look again later`);
}

// -- the list and the comparison ---------------------------------------------------------------------
async function renderList(view, query, ctx) {
  const problems = h("div", { class: "status", "aria-live": "polite" });
  const [models, activeId] = await Promise.all([api.listModels(), activeModelId()]);
  const activate = (m) =>
    m.id === activeId
      ? statusBadge("active")
      : actionButton(
          "Activate",
          async () => {
            await activateAndWait(m.id, problems);
            await rerender(ctx, `${m.id} is active.`);
          },
          { where: problems, label: `Activate ${m.id}` },
        );
  const ids = models.map((m) => m.id);
  const left = h(
    "select",
    { id: "compare-a" },
    ids.map((id) => h("option", { value: id }, id)),
  );
  const right = h(
    "select",
    { id: "compare-b" },
    ids.map((id) => h("option", { value: id }, id)),
  );
  left.value = query.get("a") || ids[0] || "";
  right.value = query.get("b") || ids[1] || ids[0] || "";
  const comparison = h("div", { id: "compare-table" });
  const compare = () =>
    renderComparison(
      comparison,
      models.find((m) => m.id === left.value),
      models.find((m) => m.id === right.value),
    );
  left.addEventListener("change", compare);
  right.addEventListener("change", compare);

  fill(
    view,
    h("h1", {}, "Models"),
    problems,
    table(
      [
        { label: "Model", value: (m) => modelLink(m.id) },
        { label: "Created", value: (m) => time(m.created_at) },
        { label: "Data set", value: (m) => m.card.dataset?.name ?? "—" },
        { label: "Input", value: (m) => inputText(m.card.input) },
        { label: "Loss", value: (m) => m.card.loss?.name ?? "—" },
        { label: "kNN-5 accuracy", value: (m) => fmtNumber(m.card.metrics?.knn_5_accuracy), class: "num" },
        { label: "Threshold", value: (m) => fmtNumber(m.card.threshold?.distance), class: "num" },
        { label: api.hasCollections() ? `In ${api.currentCollection()}` : "Serving", value: activate },
      ],
      models,
      {
        empty: "No models yet: train one on the Jobs page, or start the service with --model DIR.",
        rowAttrs: (m) => ({ dataset: { model: m.id } }),
      },
    ),
    models.length > 1
      ? h(
          "section",
          { "aria-labelledby": "h-compare" },
          h("h2", { id: "h-compare" }, "Compare two models"),
          h(
            "div",
            { class: "field-grid" },
            h("div", { class: "field" }, h("label", { for: "compare-a" }, "First model"), left),
            h("div", { class: "field" }, h("label", { for: "compare-b" }, "Second model"), right),
          ),
          comparison,
        )
      : null,
    api.hasCollections() ? await historySection(ctx) : null,
  );
  if (models.length > 1) compare();
}

function renderComparison(box, a, b) {
  if (!a || !b) return fill(box);
  const keys = [...new Set([...Object.keys(a.card.metrics || {}), ...Object.keys(b.card.metrics || {})])].sort();
  const rows = [
    ["loss", lossText(a.card.loss), lossText(b.card.loss), null],
    ["input", inputText(a.card.input), inputText(b.card.input), null],
    ["embedding dim", a.card.embedding_dim, b.card.embedding_dim, null],
    ["threshold (distance)", fmtNumber(a.card.threshold?.distance), fmtNumber(b.card.threshold?.distance), null],
    ...keys.map((k) => {
      const va = a.card.metrics?.[k];
      const vb = b.card.metrics?.[k];
      return [
        k.replaceAll("_", " "),
        fmtNumber(va),
        fmtNumber(vb),
        Number.isFinite(va) && Number.isFinite(vb) ? vb - va : null,
      ];
    }),
  ];
  fill(
    box,
    table(
      [
        { label: "", value: (r) => r[0] },
        { label: a.id, value: (r) => r[1], class: "num" },
        { label: b.id, value: (r) => r[2], class: "num" },
        {
          label: "second − first",
          value: (r) => (r[3] === null ? "" : `${r[3] > 0 ? "+" : ""}${fmtNumber(r[3], 3)}`),
          class: "num",
        },
      ],
      rows,
    ),
  );
}

async function historySection(ctx) {
  const name = api.currentCollection();
  const note = h("div", { class: "status", "aria-live": "polite" });
  let history = [];
  try {
    const answer = await api.collectionHistory(name);
    history = Array.isArray(answer) ? answer : answer.history || answer.activations || [];
  } catch (err) {
    showError(note, err);
  }
  return h(
    "section",
    { "aria-labelledby": "h-history" },
    h("h2", { id: "h-history" }, `Activations in ${name}`),
    note,
    h(
      "div",
      { class: "buttons" },
      actionButton(
        "Roll back to the previous model",
        async () => {
          await api.rollbackCollection(name);
          await rerender(ctx, `${name} rolled back.`);
        },
        { where: note },
      ),
    ),
    table(
      [
        { label: "Model", value: (e) => (e.model ? modelLink(e.model) : "—") },
        { label: "What", value: (e) => (e.previous_model ? `${e.kind} (from ${e.previous_model})` : e.kind) },
        { label: "When", value: (e) => time(e.started_at) },
        { label: "By", value: (e) => e.requested_by },
        { label: "Outcome", value: (e) => (e.error ? `${e.status}: ${e.error}` : e.status) },
        { label: "Gate", value: (e) => gateText(e.gate) },
      ],
      history,
      { empty: "No activations yet." },
    ),
  );
}

/** The promotion gate in one line: its reason, then both models' numbers when it ran. */
function gateText(gate) {
  if (!gate) return "—";
  if (!gate.checked) return gate.reason;
  const numbers = Object.keys(gate.current || {})
    .map((m) => `${m} ${gate.candidate[m].toFixed(3)} vs ${gate.current[m].toFixed(3)}`)
    .join(", ");
  return `${gate.passed ? "passed" : "refused"} on ${gate.sample} items: ${numbers}`;
}

// -- one model -------------------------------------------------------------------------------------
async function renderModel(view, id, ctx) {
  const problems = h("div", { class: "status", "aria-live": "polite" });
  const [model, activeId] = await Promise.all([api.getModel(id), activeModelId()]);
  const card = model.card;
  const urls = []; // object URLs of the plots, revoked when the page goes
  const plots = h("div", { class: "plots", id: "model-plots" }, h("p", { class: "muted" }, "Loading the report…"));
  const report = h("div");

  fill(
    view,
    h("p", {}, h("a", { href: "#/models" }, "← All models")),
    h(
      "div",
      { class: "title-row" },
      h("h1", {}, `Model ${id}`),
      id === activeId
        ? statusBadge("active")
        : actionButton(
            "Activate",
            async () => {
              await activateAndWait(id, problems);
              await rerender(ctx, `${id} is active.`);
            },
            { where: problems, cls: "primary" },
          ),
    ),
    problems,
    h(
      "div",
      { class: "cards" },
      h(
        "section",
        { class: "card", "aria-labelledby": "h-card" },
        h("h2", { id: "h-card" }, "Card"),
        dl([
          ["Input", inputText(card.input)],
          ["Embedding", `${card.embedding_dim} values${card.normalized ? ", L2-normalised" : ""}`],
          ["Distance", card.distance],
          ["Loss", lossText(card.loss)],
          ["Encoder", card.encoder && Object.keys(card.encoder).length ? lossText(card.encoder) : "—"],
          [
            "Data set",
            `${card.dataset.name}: ${card.dataset.n_train} train, ${card.dataset.n_val} validation, ${card.dataset.n_calib} calibration, ${card.dataset.n_test ?? 0} test`,
          ],
          ["Labels", card.dataset.label_names.join(", ")],
          ["Created", time(card.created_at)],
          ["Registered", time(model.created_at)],
          ["Activated", time(model.activated_at)],
        ]),
      ),
      h(
        "section",
        { class: "card", "aria-labelledby": "h-threshold" },
        h("h2", { id: "h-threshold" }, "Verification threshold"),
        card.threshold
          ? dl([
              ["Distance", fmtNumber(card.threshold.distance)],
              ["Calibrated for FAR", fmtNumber(card.threshold.target_far)],
              ["Achieved FAR", fmtNumber(card.threshold.far)],
              ["TAR at it", fmtNumber(card.threshold.tar)],
              ["Calibration pairs", fmtNumber(card.threshold.n_pairs)],
            ])
          : h("p", { class: "muted" }, "Not calibrated: /verify needs an explicit threshold."),
        model.activation
          ? h(
              "p",
              {},
              `Last activation: ${model.activation.status}${model.activation.error ? ` — ${model.activation.error}` : ""}`,
            )
          : null,
      ),
    ),
    h(
      "section",
      { "aria-labelledby": "h-metrics" },
      h("h2", { id: "h-metrics" }, "Test metrics"),
      table(
        [
          { label: "Metric", value: ([k]) => k.replaceAll("_", " ") },
          { label: "Value", value: ([, v]) => fmtNumber(v), class: "num" },
        ],
        Object.entries(card.metrics || {}),
        { empty: "The card holds no metrics." },
      ),
    ),
    h("section", { "aria-labelledby": "h-report" }, h("h2", { id: "h-report" }, "Report"), plots, report),
  );

  try {
    const answer = await api.modelReport(id);
    const pngs = Object.entries(answer.files).filter(([name]) => name.endsWith(".png"));
    const figures = await Promise.all(
      pngs.map(async ([name, url]) => {
        const src = await api.fileObjectUrl(url);
        urls.push(src);
        return h(
          "figure",
          {},
          h("img", { src, alt: `${name.replace(/\.png$/, "")} plot of ${id}` }),
          h("figcaption", {}, name),
        );
      }),
    );
    fill(plots, figures.length ? figures : h("p", { class: "muted" }, "The report has no plots."));
    fill(report, h("details", {}, h("summary", {}, "report.md"), h("pre", { class: "report" }, answer.markdown)));
  } catch (err) {
    if (err.status === 404)
      fill(plots, h("p", { class: "muted" }, "This model has no report (it was not written by the trainer)."));
    else showError(plots, err);
  }
  return () => urls.forEach((u) => URL.revokeObjectURL(u));
}
