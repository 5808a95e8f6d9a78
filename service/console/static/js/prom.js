// Read the service's /metrics (Prometheus text format): request rates and latencies per route.

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** [{name, labels, value}] for every sample line; comments and malformed lines are skipped. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = SAMPLE.exec(line);
    if (!match) continue;
    const labels = {};
    for (const [, name, raw] of (match[2] || "").matchAll(LABEL)) {
      labels[name] = raw.replace(/\\n/g, "\n").replace(/\\(.)/g, "$1");
    }
    samples.push({ name: match[1], labels, value: Number(match[3]) });
  }
  return samples;
}

/** Per "METHOD route": request count, error count, latency sum and histogram buckets. */
export function routeStats(samples) {
  const routes = new Map();
  const get = (labels) => {
    const key = `${labels.method} ${labels.route}`;
    if (!routes.has(key)) {
      routes.set(key, { key, method: labels.method, route: labels.route, count: 0, errors: 0, sum: 0, buckets: [] });
    }
    return routes.get(key);
  };
  for (const s of samples) {
    if (s.name === "embed_http_requests_total") {
      const r = get(s.labels);
      r.count += s.value;
      if (Number(s.labels.status) >= 400) r.errors += s.value;
    } else if (s.name === "embed_http_request_duration_seconds_sum") {
      get(s.labels).sum += s.value;
    } else if (s.name === "embed_http_request_duration_seconds_bucket") {
      get(s.labels).buckets.push([Number(s.labels.le), s.value]); // "+Inf" -> Infinity
    }
  }
  for (const r of routes.values()) r.buckets.sort((a, b) => a[0] - b[0]);
  return routes;
}

/**
 * The q-quantile of a cumulative histogram [[upperBound, count], ...], interpolated linearly inside
 * the bucket it falls in, as Prometheus' histogram_quantile does; the last finite bound caps +Inf.
 */
export function histogramQuantile(q, buckets) {
  if (!buckets.length) return NaN;
  const total = buckets[buckets.length - 1][1];
  if (!total) return NaN;
  const rank = q * total;
  let prevBound = 0;
  let prevCount = 0;
  for (const [bound, count] of buckets) {
    if (count >= rank) {
      if (bound === Infinity) return prevBound;
      if (count === prevCount) return bound;
      return prevBound + ((bound - prevBound) * (rank - prevCount)) / (count - prevCount);
    }
    prevBound = bound;
    prevCount = count;
  }
  return prevBound;
}

/** One gauge's value (the first sample of that name), or null. */
export function gauge(samples, name) {
  const s = samples.find((x) => x.name === name);
  return s ? s.value : null;
}
