// A small SVG line chart: enough for loss curves, with no library.
import { fmtNumber, h } from "./dom.js";

const W = 560;
const H = 220;
const PAD = { left: 56, right: 12, top: 12, bottom: 34 };

/**
 * series: [{name, points: [[x, y], ...], cls}] drawn on shared axes.
 * The chart is an image to assistive technology; the same numbers are in a table beside it.
 */
export function lineChart(series, { label, xLabel = "", yLabel = "" } = {}) {
  const all = series.flatMap((s) => s.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": label });
  if (!all.length) {
    svg.append(h("svg:text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" }, "no data yet"));
    return withLegend(svg, []);
  }
  let [x0, x1] = extent(all.map((p) => p[0]));
  let [y0, y1] = extent(all.map((p) => p[1]));
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1];
  if (y0 === y1) [y0, y1] = [y0 - Math.abs(y0 || 1) * 0.1, y1 + Math.abs(y1 || 1) * 0.1];
  const sx = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const sy = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);

  for (const tick of ticks(y0, y1, 4)) {
    svg.append(
      h("svg:line", { x1: PAD.left, x2: W - PAD.right, y1: sy(tick), y2: sy(tick), class: "chart-grid" }),
      h(
        "svg:text",
        { x: PAD.left - 6, y: sy(tick) + 4, "text-anchor": "end", class: "chart-tick" },
        fmtNumber(tick, 3),
      ),
    );
  }
  for (const tick of ticks(x0, x1, 5)) {
    svg.append(
      h(
        "svg:text",
        { x: sx(tick), y: H - PAD.bottom + 16, "text-anchor": "middle", class: "chart-tick" },
        fmtNumber(tick, 3),
      ),
    );
  }
  svg.append(
    h("svg:line", { x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom, class: "chart-axis" }),
    h("svg:line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "chart-axis" }),
    h("svg:text", { x: (W + PAD.left) / 2, y: H - 4, "text-anchor": "middle", class: "chart-label" }, xLabel),
    h("svg:text", { x: 12, y: PAD.top + 4, class: "chart-label" }, yLabel),
  );
  series.forEach((s, i) => {
    const points = s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    if (!points.length) return;
    const cls = `chart-line ${s.cls || `series-${i}`}`;
    svg.append(h("svg:polyline", { points: points.map(([x, y]) => `${sx(x)},${sy(y)}`).join(" "), class: cls }));
    if (points.length < 40) {
      for (const [x, y] of points) svg.append(h("svg:circle", { cx: sx(x), cy: sy(y), r: 3, class: cls }));
    }
  });
  return withLegend(svg, series);
}

/** The chart with an HTML legend under it (kept out of the plot, where it would hide lines). */
function withLegend(svg, series) {
  const items = series
    .map((s, i) => ({ ...s, cls: `chart-line ${s.cls || `series-${i}`}` }))
    .filter((s) => s.points.length)
    .map((s) =>
      h(
        "li",
        {},
        h(
          "svg:svg",
          { viewBox: "0 0 22 10", "aria-hidden": "true" },
          h("svg:line", { x1: 0, x2: 22, y1: 5, y2: 5, class: s.cls }),
        ),
        s.name,
      ),
    );
  return h("div", { class: "chart-wrap" }, svg, items.length ? h("ul", { class: "legend" }, items) : null);
}

function extent(values) {
  return [Math.min(...values), Math.max(...values)];
}

/** About `n` round tick values between lo and hi. */
function ticks(lo, hi, n) {
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}
