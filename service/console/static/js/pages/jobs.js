// Jobs: the list, a job's live page (progress, loss chart, per-epoch validation, log, cancel),
// and the new-job form generated from the training config's JSON schema, with data set uploads.
import * as api from "../api.js";
import { lineChart } from "../chart.js";
import {
  actionButton,
  dl,
  fill,
  fillIfChanged,
  fmtNumber,
  fmtSeconds,
  h,
  parseTime,
  showError,
  showNote,
  statusBadge,
  table,
  time,
} from "../dom.js";
import { schemaFields } from "../schemaform.js";

const LIST_REFRESH_MS = 2000;
const JOB_REFRESH_MS = 1000;
const BUILTIN_DATASETS = [
  ["digits", "digits — scikit-learn's 8×8 digits (1,797)"],
  ["mnist-5k", "mnist-5k — 5,000 MNIST digits"],
  ["fashion-mnist", "fashion-mnist — Fashion-MNIST (needs Debian's dataset-fashion-mnist)"],
];
const ITEMS_SOURCE = "__items__";
const OTHER_DATASET = "__other__";
const PRIMARY_FIELDS = [
  "dataset",
  "loss",
  "encoder",
  "epochs",
  "batch_size",
  "samples_per_class",
  "lr",
  "embedding_dim",
  "hidden",
  "name",
  "activate",
];
const ACTIVE = new Set(["queued", "running"]);

export async function render(view, { args, ctx }) {
  if (args[0] === "new") return renderNew(view, ctx);
  if (args[0]) return renderJob(view, args[0]);
  return renderList(view);
}

const jobLink = (job) => h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id);

function progressText(job) {
  const p = job.progress || {};
  if (!p.epochs) return job.status === "queued" ? "waiting for a worker" : "—";
  const step = p.phase === "train" && p.steps ? `, step ${p.step}/${p.steps}` : "";
  return `epoch ${p.epoch}/${p.epochs}${step}`;
}

// -- the list --------------------------------------------------------------------------------------
async function renderList(view) {
  const list = h("div", { id: "jobs-list" });
  const problems = h("div", { class: "status", "aria-live": "polite" });
  fill(
    view,
    h(
      "div",
      { class: "title-row" },
      h("h1", {}, "Jobs"),
      h("a", { class: "button primary", href: "#/jobs/new" }, "New training job"),
    ),
    problems,
    list,
  );
  let timer = null;
  let stopped = false;
  async function refresh() {
    try {
      const { jobs, total } = await api.listJobs({ limit: 100 });
      fillIfChanged(list, JSON.stringify(jobs), () => [
        h("p", { class: "muted" }, `${total} job${total === 1 ? "" : "s"}, newest first.`),
        table(
          [
            { label: "Job", value: jobLink },
            { label: "Status", value: (j) => statusBadge(j.status) },
            {
              label: "Model",
              value: (j) =>
                j.status === "succeeded"
                  ? h("a", { href: `#/models/${encodeURIComponent(j.model_id)}` }, j.model_id)
                  : j.model_id,
            },
            { label: "Data set", value: (j) => j.dataset },
            { label: "Loss", value: (j) => j.config.loss || "—" },
            { label: "Progress", value: progressText },
            { label: "Activation", value: (j) => j.activation || (j.activate ? "on success" : "—") },
            { label: "Created", value: (j) => time(j.created_at) },
          ],
          jobs,
          { empty: "No jobs yet: start one with “New training job”." },
        ),
      ]);
      fill(problems);
    } catch (err) {
      showError(problems, err);
    }
    if (!stopped) timer = setTimeout(refresh, LIST_REFRESH_MS);
  }
  await refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// -- a job's live page -------------------------------------------------------------------------------
async function renderJob(view, jobId) {
  const problems = h("div", { class: "status", "aria-live": "polite" });
  const heading = h("h1", {}, `Job ${jobId}`);
  const badge = h("span", { id: "job-status" });
  const actions = h("div", { class: "actions" });
  const facts = h("div");
  const progress = h("div", { id: "job-progress" });
  const lossChart = h("div", { class: "chart-box" });
  const valChart = h("div", { class: "chart-box" });
  const epochs = h("div", { id: "job-epochs" });
  const result = h("div", { id: "job-result" });
  const log = h("pre", { class: "log", id: "job-log", tabindex: 0, "aria-label": "Log tail" });
  fill(
    view,
    h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
    h("div", { class: "title-row" }, heading, badge, actions),
    problems,
    h(
      "div",
      { class: "cards" },
      h(
        "section",
        { class: "card", "aria-labelledby": "h-progress" },
        h("h2", { id: "h-progress" }, "Progress"),
        progress,
      ),
      h("section", { class: "card" }, h("h2", {}, "Job"), facts),
    ),
    h(
      "div",
      { class: "cards" },
      h("section", { class: "card" }, h("h2", {}, "Training loss"), lossChart),
      h("section", { class: "card" }, h("h2", {}, "Validation"), valChart),
    ),
    h(
      "section",
      { "aria-labelledby": "h-epochs" },
      h("h2", { id: "h-epochs" }, "Validation metrics per epoch"),
      epochs,
    ),
    h(
      "section",
      { "aria-labelledby": "h-result" },
      h("h2", { id: "h-result" }, "Test metrics of the exported model"),
      result,
    ),
    h("section", { "aria-labelledby": "h-log" }, h("h2", { id: "h-log" }, "Log"), log),
  );

  const steps = new Map(); // fractional epoch -> loss, sampled while this page watches
  let timer = null;
  let stopped = false;
  let shownActions = null;

  async function refresh() {
    let job;
    try {
      job = await api.getJob(jobId);
      fill(problems);
    } catch (err) {
      showError(problems, err);
      clearTimeout(timer); // one polling loop, even when a click refreshed in between
      if (!stopped && err.status !== 404) timer = setTimeout(refresh, JOB_REFRESH_MS * 3);
      return;
    }
    const p = job.progress || {};
    if (p.phase === "train" && p.steps && Number.isFinite(p.loss)) steps.set(p.epoch - 1 + p.step / p.steps, p.loss);
    fill(badge, statusBadge(job.status));
    renderActions(job);
    renderProgress(progress, job);
    const { progress: _progress, heartbeat_at: _beat, log: _log, metrics: _metrics, ...factsKey } = job;
    fillIfChanged(facts, JSON.stringify(factsKey), () => [
      dl([
        [
          "Model",
          job.status === "succeeded"
            ? h("a", { href: `#/models/${encodeURIComponent(job.model_id)}`, id: "job-model-link" }, job.model_id)
            : job.model_id,
        ],
        ["Data set", job.dataset],
        ["Loss", job.config.loss],
        ["Activate when done", job.activate ? "yes" : "no"],
        ["Activation", job.activation || "—"],
        ["Created", time(job.created_at)],
        ["Started", time(job.started_at)],
        ["Finished", time(job.finished_at)],
        ["Attempts", fmtNumber(job.attempts)],
        ["Worker", job.worker_id || "—"],
      ]),
      job.error ? h("p", { class: "error", role: "alert" }, job.error) : null,
      h("details", {}, h("summary", {}, "Config"), h("pre", {}, JSON.stringify(job.config, null, 2))),
    ]);
    const metrics = job.metrics || [];
    const metricsKey = JSON.stringify(metrics);
    fillIfChanged(lossChart, `${metricsKey} ${steps.size}`, () =>
      lineChart(
        [
          { name: "epoch mean", points: metrics.map((m) => [m.epoch, m.loss]), cls: "series-0" },
          { name: "steps (live)", points: [...steps].sort((a, b) => a[0] - b[0]), cls: "series-1" },
        ],
        { label: `Training loss of job ${jobId}`, xLabel: "epoch", yLabel: "loss" },
      ),
    );
    const valKeys = [...new Set(metrics.flatMap((m) => Object.keys(m)))].filter((k) => k.startsWith("val_"));
    fillIfChanged(valChart, metricsKey, () =>
      lineChart(
        valKeys.map((k, i) => ({ name: k.slice(4), points: metrics.map((m) => [m.epoch, m[k]]), cls: `series-${i}` })),
        { label: `Validation metrics of job ${jobId}`, xLabel: "epoch", yLabel: "" },
      ),
    );
    fillIfChanged(epochs, metricsKey, () =>
      table(
        [
          { label: "Epoch", value: (m) => m.epoch, class: "num" },
          { label: "Loss", value: (m) => fmtNumber(m.loss), class: "num" },
          ...valKeys.map((k) => ({
            label: k.slice(4).replaceAll("_", " "),
            value: (m) => fmtNumber(m[k]),
            class: "num",
          })),
          { label: "Seconds", value: (m) => fmtNumber(m.seconds, 3), class: "num" },
          { label: "Learning rate", value: (m) => fmtNumber(m.lr, 3), class: "num" },
        ],
        metrics,
        { empty: "No epoch has finished yet." },
      ),
    );
    fillIfChanged(result, JSON.stringify(job.result), () =>
      job.result
        ? table(
            [
              { label: "Metric", value: ([k]) => k.replaceAll("_", " ") },
              { label: "Value", value: ([, v]) => fmtNumber(v), class: "num" },
            ],
            Object.entries(job.result),
          )
        : h("p", { class: "muted" }, "Written when the job succeeds."),
    );
    const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 8;
    log.textContent = job.log || "(no output yet)";
    if (atBottom) log.scrollTop = log.scrollHeight;
    const settling =
      ACTIVE.has(job.status) || (job.status === "succeeded" && ["pending", "activating"].includes(job.activation));
    clearTimeout(timer); // one polling loop, even when a click refreshed in between
    if (!stopped && settling) timer = setTimeout(refresh, JOB_REFRESH_MS);
  }

  function renderActions(job) {
    const key = `${job.status}/${job.cancel_requested}`;
    if (key === shownActions) return; // keep focus on a button that did not change
    shownActions = key;
    fill(
      actions,
      ACTIVE.has(job.status) && !job.cancel_requested
        ? actionButton(
            "Cancel job",
            async () => {
              await api.cancelJob(jobId);
              clearTimeout(timer);
              await refresh();
              showNote(document.getElementById("status"), "Cancel requested: a running job stops at its next step.");
            },
            { where: problems, cls: "danger" },
          )
        : null,
      job.cancel_requested && ACTIVE.has(job.status) ? h("span", { class: "muted" }, "cancelling…") : null,
    );
  }

  await refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function renderProgress(box, job) {
  const p = job.progress || {};
  const started = parseTime(job.started_at);
  const end = job.finished_at ? parseTime(job.finished_at) : Date.now();
  const elapsed = Number.isFinite(started) ? (end - started) / 1000 : NaN;
  let fraction = 0;
  if (job.status === "succeeded") fraction = 1;
  else if (p.epochs)
    fraction = p.phase === "train" && p.steps ? (p.epoch - 1 + p.step / p.steps) / p.epochs : p.epoch / p.epochs;
  fraction = Math.min(1, Math.max(0, fraction));
  const eta =
    ACTIVE.has(job.status) && fraction > 0 && Number.isFinite(elapsed) ? (elapsed * (1 - fraction)) / fraction : NaN;
  fill(
    box,
    h("progress", { max: 1, value: fraction, "aria-label": "training progress", id: "job-progress-bar" }),
    dl([
      ["Phase", p.phase || job.status],
      ["Epoch", p.epochs ? `${p.epoch} of ${p.epochs}` : "—"],
      ["Step", p.steps ? `${p.step} of ${p.steps}` : "—"],
      ["Loss", fmtNumber(p.loss)],
      ["Elapsed", fmtSeconds(elapsed)],
      [
        "ETA",
        ACTIVE.has(job.status)
          ? Number.isFinite(eta)
            ? `about ${fmtSeconds(eta)} (early stopping may end it sooner)`
            : "—"
          : "done",
      ],
    ]),
  );
}

// -- a new job -------------------------------------------------------------------------------------
async function renderNew(view, ctx) {
  const problems = h("div", { class: "status", "aria-live": "polite", id: "train-problems" });
  const uploadStatus = h("div", { class: "status", "aria-live": "polite", id: "upload-status" });
  const [spec, datasets] = await Promise.all([ctx.openapi(), api.listDatasets()]);

  let datasetSelect;
  let otherInput;
  const datasetField = (name, prop, { id }) => {
    datasetSelect = h("select", { id, name });
    otherInput = h("input", {
      type: "text",
      id: `${id}-other`,
      "aria-label": "Data set file under the data directory's datasets/ folder",
      placeholder: "file under datasets/",
      hidden: true,
    });
    fillDatasets(datasetSelect, datasets);
    datasetSelect.addEventListener("change", () => {
      otherInput.hidden = datasetSelect.value !== OTHER_DATASET;
    });
    return {
      control: h("div", { class: "stack" }, datasetSelect, otherInput),
      input: datasetSelect,
      read() {
        if (datasetSelect.value === ITEMS_SOURCE) return { source: "items" };
        if (datasetSelect.value === OTHER_DATASET) return otherInput.value.trim() || undefined;
        return datasetSelect.value;
      },
    };
  };
  const custom = { dataset: datasetField };
  if (api.hasCollections()) {
    // POST /train's "collection": where the finished model is activated (and items are read from)
    const names = ((await api.listCollections()) || []).map((c) => c.name);
    custom.collection = (name, prop, { id }) => {
      const select = h(
        "select",
        { id, name },
        names.map((n) => h("option", { value: n, selected: n === api.currentCollection() }, n)),
      );
      return { control: select, read: () => select.value };
    };
  }
  const form = schemaFields(spec, "TrainRequest", { custom, primary: [...PRIMARY_FIELDS, "collection"] });
  const submit = h("button", { type: "submit", class: "primary" }, "Start training");
  const trainForm = h(
    "form",
    { id: "train-form", "aria-labelledby": "h-new", novalidate: true },
    form.element,
    h("div", { class: "buttons" }, submit),
  );
  trainForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    submit.disabled = true;
    fill(problems);
    try {
      const body = form.read();
      form.showErrors([]);
      const created = await api.train(body);
      ctx.go(`#/jobs/${encodeURIComponent(created.id)}`);
    } catch (err) {
      const { loose, marked } = [400, 409, 422].includes(err.status)
        ? form.showErrors(err.detail)
        : { loose: [err.message], marked: 0 };
      if (loose.length) showError(problems, new Error(loose.join("; ")));
      else if (marked)
        showError(
          problems,
          new Error(
            `The service refused ${marked === 1 ? "a field" : `${marked} fields`}: see the message${marked === 1 ? "" : "s"} below.`,
          ),
        );
    } finally {
      submit.disabled = false;
    }
  });

  const fileInput = h("input", { type: "file", id: "upload-file", accept: ".npz,.csv", required: true });
  const labelColumn = h("input", { type: "text", id: "upload-label-column", value: "label" });
  const uploadButton = h("button", { type: "submit" }, "Upload");
  const uploadForm = h(
    "form",
    { id: "upload-form", "aria-labelledby": "h-upload" },
    h(
      "div",
      { class: "field-grid" },
      h(
        "div",
        { class: "field" },
        h("label", { for: "upload-file" }, "File (.npz with x, y[, label_names], or .csv)"),
        fileInput,
      ),
      h("div", { class: "field" }, h("label", { for: "upload-label-column" }, "Label column of a .csv"), labelColumn),
    ),
    h("div", { class: "buttons" }, uploadButton),
  );
  uploadForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!fileInput.files.length) return showError(uploadStatus, new Error("choose a file first"));
    uploadButton.disabled = true;
    try {
      const added = await api.uploadDataset(fileInput.files[0], labelColumn.value.trim());
      showNote(
        uploadStatus,
        `Uploaded ${added.original_name} as ${added.id}: ${added.n} samples, ${added.classes.length} classes, shape ${added.shape.join("×")}.`,
      );
      fillDatasets(datasetSelect, await api.listDatasets(), added.id);
      uploadForm.reset();
    } catch (err) {
      showError(uploadStatus, err);
    } finally {
      uploadButton.disabled = false;
    }
  });

  fill(
    view,
    h("p", {}, h("a", { href: "#/jobs" }, "← All jobs")),
    h("h1", {}, "New training job"),
    h(
      "section",
      { "aria-labelledby": "h-new" },
      h("h2", { id: "h-new", class: "visually-hidden" }, "Training config"),
      h(
        "p",
        { class: "muted" },
        "The trainer's config, as ",
        h("code", {}, "python -m trainer train"),
        " takes it; fields left at their default are not sent.",
      ),
      problems,
      trainForm,
    ),
    h(
      "section",
      { "aria-labelledby": "h-upload" },
      h("h2", { id: "h-upload" }, "Upload a data set"),
      uploadStatus,
      uploadForm,
    ),
  );
}

function fillDatasets(select, uploaded, chosen) {
  const value = chosen || select.value || "digits";
  fill(
    select,
    h(
      "optgroup",
      { label: "Built-in" },
      BUILTIN_DATASETS.map(([v, label]) => h("option", { value: v }, label)),
    ),
    uploaded.length
      ? h(
          "optgroup",
          { label: "Uploaded" },
          uploaded.map((d) =>
            h("option", { value: d.id }, `${d.id} — ${d.original_name} (${d.n} samples, ${d.classes.length} classes)`),
          ),
        )
      : null,
    h(
      "optgroup",
      { label: "Other" },
      h("option", { value: ITEMS_SOURCE }, "the labelled items stored in the service"),
      h("option", { value: OTHER_DATASET }, "a file under the data directory's datasets/ folder…"),
    ),
  );
  select.value = value;
}
