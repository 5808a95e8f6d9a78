// Overview: health, the index (or the collections), request rates and latencies from /metrics.
import * as api from "../api.js";
import { dl, fill, fillIfChanged, fmtNumber, h, showError, statusBadge, table } from "../dom.js";
import { gauge, histogramQuantile, parseMetrics, routeStats } from "../prom.js";

const REFRESH_MS = 5000;

const ms = (seconds) => (Number.isFinite(seconds) ? `${fmtNumber(seconds * 1000, 3)} ms` : "—");

export async function render(view) {
  const healthBox = h("div", { id: "overview-health" }, h("p", { class: "muted" }, "Loading…"));
  const indexBox = h("div", { id: "overview-index" });
  const requestsBox = h("div", { id: "overview-requests" });
  const problems = h("div", { class: "status", "aria-live": "polite" });
  fill(
    view,
    h("h1", {}, "Overview"),
    problems,
    h(
      "div",
      { class: "cards" },
      h("section", { class: "card", "aria-labelledby": "h-health" }, h("h2", { id: "h-health" }, "Service"), healthBox),
      h(
        "section",
        { class: "card", "aria-labelledby": "h-index" },
        h("h2", { id: "h-index" }, api.hasCollections() ? "Collections" : "Index"),
        indexBox,
      ),
    ),
    h(
      "section",
      { "aria-labelledby": "h-requests" },
      h("h2", { id: "h-requests" }, "Requests"),
      h("p", { class: "muted" }, `Rates over the last ${REFRESH_MS / 1000} s; latencies since the service started.`),
      requestsBox,
    ),
  );

  let previous = null; // {at, routes} of the last scrape, for rates
  let timer = null;
  let stopped = false;

  async function refresh() {
    try {
      const [health, info, metricsText, running, queued, collections] = await Promise.all([
        api.health(),
        api.info(),
        api.metricsText(),
        api.listJobs({ status: "running", limit: 1 }),
        api.listJobs({ status: "queued", limit: 1 }),
        api.hasCollections() ? api.listCollections() : null,
      ]);
      const samples = parseMetrics(metricsText);
      const queue = gauge(samples, "embed_queue_items") ?? 0;
      const key = JSON.stringify([
        health,
        info.version,
        info.model?.model_id,
        running.total,
        queued.total,
        queue,
        info.limits,
      ]);
      fillIfChanged(healthBox, key, () =>
        dl([
          ["Health", statusBadge(health.status)],
          ["Version", info.version],
          [
            "Active model",
            info.model
              ? h("a", { href: `#/models/${encodeURIComponent(info.model.model_id)}` }, info.model.model_id)
              : "none (train one on the Jobs page)",
          ],
          ["Training jobs", `${running.total} running, ${queued.total} queued`],
          ["Encoder queue", `${fmtNumber(queue)} items waiting`],
          ["Limits", `${info.limits.max_items} items per request, k ≤ ${info.limits.max_k}`],
        ]),
      );
      fillIfChanged(indexBox, JSON.stringify([info.index, collections]), () => renderIndex(info, collections));
      renderRequests(requestsBox, samples);
      fill(problems);
    } catch (err) {
      showError(problems, err);
    }
    if (!stopped) timer = setTimeout(refresh, REFRESH_MS);
  }

  function renderRequests(box, samples) {
    const now = performance.now();
    const routes = routeStats(samples);
    const rows = [...routes.values()].filter((r) => r.count > 0).sort((a, b) => b.count - a.count);
    const rate = (r) => {
      const before = previous && previous.routes.get(r.key);
      if (!previous) return "—";
      const seconds = (now - previous.at) / 1000;
      return `${fmtNumber((r.count - (before ? before.count : 0)) / seconds, 3)}/s`;
    };
    fill(
      box,
      table(
        [
          { label: "Route", value: (r) => h("code", {}, `${r.method} ${r.route}`) },
          { label: "Requests", value: (r) => fmtNumber(r.count), class: "num" },
          { label: "Rate", value: rate, class: "num" },
          { label: "Errors (4xx/5xx)", value: (r) => fmtNumber(r.errors), class: "num" },
          { label: "Mean", value: (r) => ms(r.sum / r.count), class: "num" },
          { label: "p50", value: (r) => ms(histogramQuantile(0.5, r.buckets)), class: "num" },
          { label: "p95", value: (r) => ms(histogramQuantile(0.95, r.buckets)), class: "num" },
        ],
        rows,
        { empty: "No requests yet." },
      ),
    );
    previous = { at: now, routes };
  }

  await refresh();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

function renderIndex(info, collections) {
  const modelLink = (id) => (id ? h("a", { href: `#/models/${encodeURIComponent(id)}` }, id) : "none");
  if (collections) {
    return table(
      [
        { label: "Collection", value: (c) => c.name },
        { label: "Items", value: (c) => fmtNumber(c.size), class: "num" },
        { label: "Index type", value: (c) => c.index_type || (c.index && c.index.type) || "—" },
        { label: "Active model", value: (c) => modelLink(c.model || c.model_id) },
      ],
      collections,
      { empty: "No collections." },
    );
  }
  return dl([
    ["Items", fmtNumber(info.index.size)],
    ["Index type", info.index.type || `${info.index.configured_type} (no model loaded)`],
    ["Model of the index", modelLink(info.index.model_id)],
  ]);
}
