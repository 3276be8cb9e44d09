// The dashboard: polls the service's JSON routes and redraws the page without a reload.
//
// Every text that comes from the service (key names, topics, error messages) is
// inserted as a text node or an attribute value, never as HTML.
"use strict";

const API = "/api/v1/microtopic-content";
const POLL_MS = 2000;
const RECENT_REQUESTS = 25;
const SVG_NS = "http://www.w3.org/2000/svg";
const CHART = { width: 420, height: 190, left: 40, right: 8, top: 12, bottom: 24 };
// The columns of the errors table: each cell's `data-period` and its field in `errors`.
const ERROR_PERIODS = [["1m", "last_1m"], ["15m", "last_15m"], ["start", "since_start"]];

const view = {
  window: "15m",
  filters: { kind: "", status: "", key: "", error: "" },
  traceId: null,
  keyNames: [],
  polling: false,
};

// ---- DOM helpers ---------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  setAttributes(node, attributes);
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG_NS, tag);
  setAttributes(node, attributes);
  if (text !== null) node.textContent = String(text);
  return node;
}

function setAttributes(node, attributes) {
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "className") node.setAttribute("class", value);
    else node.setAttribute(name, value === true ? "" : String(value));
  }
}

function byId(id) {
  return document.getElementById(id);
}

// A class name made only of the characters that our fixed states and kinds use.
function token(value) {
  return String(value).replace(/[^a-z0-9_-]/gi, "");
}

function formatMs(value) {
  if (value === null || value === undefined) return "–";
  if (value >= 10000) return `${(value / 1000).toFixed(1)} s`;
  return `${Math.round(value)} ms`;
}

function formatTime(iso) {
  return new Date(iso).toLocaleTimeString([], { hour12: false });
}

function usedAndLeft(used, left) {
  if (used === null || left === null) return "no limit";
  return `${used} / ${left}`;
}

// ---- Fetching ------------------------------------------------------------

async function getJson(path) {
  const response = await fetch(path, { cache: "no-store", headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

function requestsPath() {
  const query = new URLSearchParams({ limit: String(RECENT_REQUESTS) });
  for (const [name, value] of Object.entries(view.filters)) {
    if (value) query.set(name, value);
  }
  return `${API}/requests?${query}`;
}

async function poll() {
  if (view.polling || document.hidden) return;
  view.polling = true;
  try {
    const [dashboard, series, requests, jobs] = await Promise.all([
      getJson(`${API}/debug/dashboard`),
      getJson(`${API}/stats/timeseries?window=${view.window}&operation=llm_call&operation=generation`),
      getJson(requestsPath()),
      getJson(`${API}/jobs`),
    ]);
    renderCapacity(dashboard.service_stats);
    renderKeys(dashboard.key_stats, dashboard.performance_stats);
    renderErrors(dashboard.errors);
    renderCharts(series);
    renderJobs(jobs.jobs);
    renderRequests(requests.requests);
    setStatus("live", `Live · updated ${formatTime(dashboard.timestamp)}`);
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  } catch (error) {
    setStatus("offline", `Offline: ${error.message}. Retrying every ${POLL_MS / 1000} s.`);
  } finally {
    view.polling = false;
  }
}

function setStatus(state, text) {
  const status = byId("status");
  status.dataset.state = state;
  status.textContent = text;
}

// ---- Capacity ------------------------------------------------------------

function renderCapacity(capacity) {
  byId("capacity-active").textContent = `${capacity.active_requests} of ${capacity.max_concurrent_requests}`;
  byId("capacity-queued").textContent = `${capacity.queued_requests} of ${capacity.max_queue_size}`;
  byId("capacity-free").textContent = String(capacity.available_slots);
  byId("capacity-total").textContent = String(capacity.total_requests);
  byId("capacity-failed").textContent = String(capacity.failed_requests);
  const share = capacity.max_concurrent_requests
    ? (100 * capacity.active_requests) / capacity.max_concurrent_requests
    : 0;
  byId("capacity-meter").style.width = `${Math.min(100, share)}%`;
}

// ---- Keys and errors -----------------------------------------------------

function operationsByName(operations) {
  return new Map(operations.map((operation) => [operation.operation, operation]));
}

function renderKeys(keys, operations) {
  const byName = operationsByName(operations);
  const rows = keys.map((key) => {
    const window = byName.get(`llm_call:${key.name}`)?.last_15m;
    const latency = (value) => (window && window.count ? Math.round(value) : "–");
    const inFlight = key.max_concurrency === null
      ? String(key.active_calls)
      : `${key.active_calls} of ${key.max_concurrency}`;
    const reason = key.disabled_reason || key.exhausted_reason || key.last_error || "";
    return el(
      "tr",
      { "data-key": key.name, "data-state": key.state },
      el("th", { scope: "row" }, key.name),
      el("td", {}, el("span", { className: `badge state-${token(key.state)}`, title: reason }, key.state)),
      el("td", { className: "num" }, key.usage_count),
      el("td", { className: "num" }, inFlight),
      el("td", { className: "wrap" }, errorList(key.errors_by_class)),
      el("td", { className: "num" }, key.cooldown_remaining_s ? `${key.cooldown_remaining_s.toFixed(1)} s` : "–"),
      el("td", { className: "num" }, usedAndLeft(key.quota.requests_used, key.quota.requests_remaining)),
      el("td", { className: "num" }, usedAndLeft(key.quota.tokens_used, key.quota.tokens_remaining)),
      el("td", { className: "num" }, window ? latency(window.p50_ms) : "–"),
      el("td", { className: "num" }, window ? latency(window.p95_ms) : "–"),
    );
  });
  byId("keys-table").tBodies[0].replaceChildren(...rows);
  updateKeyFilter(keys.map((key) => key.name));
}

function errorList(errors) {
  const entries = Object.entries(errors).sort(([a], [b]) => a.localeCompare(b));
  if (!entries.length) return "–";
  return entries.map(([code, count]) => `${code} ${count}`).join(", ");
}

function percent(rate) {
  return `${(100 * rate).toFixed(1)}%`;
}

// One row per error class, the classes most frequent in the last minute first,
// then in the last 15 minutes, then since start.
function renderErrors(errors) {
  const periods = ERROR_PERIODS.map(([name, field]) => [name, errors[field]]);
  const countsOf = (code) => periods.map(([, period]) => period.by_class[code]?.count || 0);
  const byRecentCounts = (a, b) => {
    const [countsA, countsB] = [countsOf(a), countsOf(b)];
    const index = countsA.findIndex((count, i) => count !== countsB[i]);
    return index === -1 ? a.localeCompare(b) : countsB[index] - countsA[index];
  };
  const codes = [...new Set(periods.flatMap(([, period]) => Object.keys(period.by_class)))];
  const rows = codes.sort(byRecentCounts).map((code) => el(
    "tr",
    { "data-error": code },
    el("th", { scope: "row" }, ...breakableCode(code)),
    ...periods.map(([name, period]) => errorCell(name, period.by_class[code])),
  ));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 4, className: "empty" }, "No failed attempts.")));
  const table = byId("errors-table");
  table.tBodies[0].replaceChildren(...rows);
  table.tFoot.replaceChildren(el(
    "tr",
    {},
    el("th", { scope: "row" }, "All attempts", el("span", { className: "share" }, "share failed")),
    ...periods.map(([name, period]) => el(
      "td",
      { className: "num", "data-period": name },
      period.attempts,
      el("span", { className: "share" }, period.attempts ? percent(period.failure_rate) : "–"),
    )),
  ));
  byId("error-rates").textContent = errors.since_start.attempts
    ? "Failed LLM attempts by class in the last minute, the last 15 minutes and since start, each with its share of all attempts in that period."
    : "No LLM calls yet.";
}

// An error code that may wrap after its underscores when the card is narrow.
function breakableCode(code) {
  const parts = code.split("_");
  return parts.flatMap((part, index) => (index < parts.length - 1 ? [`${part}_`, el("wbr")] : [part]));
}

function errorCell(periodName, failed) {
  return el(
    "td",
    { className: "num", "data-period": periodName },
    failed ? failed.count : 0,
    el("span", { className: "share" }, failed ? percent(failed.rate) : "–"),
  );
}

function updateKeyFilter(names) {
  if (names.join("\n") === view.keyNames.join("\n")) return;
  view.keyNames = names;
  const select = byId("request-filters").elements.namedItem("key");
  const chosen = select.value;
  select.replaceChildren(el("option", { value: "" }, "any"), ...names.map((name) => el("option", { value: name }, name)));
  select.value = names.includes(chosen) ? chosen : "";
}

// ---- Charts --------------------------------------------------------------

function renderCharts(timeseries) {
  const series = new Map(timeseries.series.map((entry) => [entry.operation, entry.points]));
  const calls = series.get("llm_call") || [];
  const generations = series.get("generation") || [];
  document.querySelectorAll(".slot-label").forEach((label) => {
    label.textContent = timeseries.slot_s >= 60 ? "minute" : `${timeseries.slot_s} seconds`;
  });
  drawBars(byId("throughput-chart"), calls, timeseries.window);
  drawLines(byId("latency-chart"), [
    { points: calls.map((point) => point.count ? point.p50_ms : null), className: "p50" },
    { points: calls.map((point) => point.count ? point.p95_ms : null), className: "p95" },
    { points: generations.map((point) => point.count ? point.p95_ms : null), className: "generation" },
  ], calls.length, timeseries.window);
}

function chartFrame(chart, maxValue, slots, window) {
  const { width, height, left, right, top, bottom } = CHART;
  const plotHeight = height - top - bottom;
  const nodes = [
    svg("line", { className: "axis", x1: left, y1: top + plotHeight, x2: width - right, y2: top + plotHeight }),
    svg("line", { className: "axis", x1: left, y1: top, x2: left, y2: top + plotHeight }),
    svg("text", { x: left - 6, y: top + 10, "text-anchor": "end" }, Math.round(maxValue)),
    svg("text", { x: left - 6, y: top + plotHeight, "text-anchor": "end" }, 0),
    svg("text", { x: left, y: height - 4 }, window === "1m" ? "−1 min" : "−15 min"),
    svg("text", { x: width - right, y: height - 4, "text-anchor": "end" }, "now"),
  ];
  chart.replaceChildren(...nodes);
  const slotWidth = (width - left - right) / Math.max(1, slots);
  const y = (value) => top + plotHeight - (plotHeight * value) / maxValue;
  return { slotWidth, y, plotBottom: top + plotHeight };
}

function drawBars(chart, points, window) {
  const maxValue = Math.max(1, ...points.map((point) => point.count));
  const { slotWidth, y, plotBottom } = chartFrame(chart, maxValue, points.length, window);
  points.forEach((point, index) => {
    const x = CHART.left + index * slotWidth + slotWidth * 0.15;
    const barWidth = slotWidth * 0.7;
    const okCount = point.count - point.error_count;
    const label = `${formatTime(point.start)}: ${point.count} calls, ${point.error_count} failed`;
    const group = svg("g", {});
    group.append(svg("title", {}, label));
    group.append(svg("rect", { className: "bar-ok", x, y: y(okCount), width: barWidth, height: plotBottom - y(okCount) }));
    group.append(svg("rect", { className: "bar-bad", x, y: y(point.count), width: barWidth, height: y(okCount) - y(point.count) }));
    chart.append(group);
  });
}

function drawLines(chart, lines, slots, window) {
  const values = lines.flatMap((line) => line.points.filter((value) => value !== null));
  const maxValue = Math.max(1, ...values);
  const { slotWidth, y } = chartFrame(chart, maxValue, slots, window);
  for (const line of lines) {
    let path = "";
    line.points.forEach((value, index) => {
      if (value === null) return;
      const x = CHART.left + index * slotWidth + slotWidth / 2;
      const previous = index > 0 && line.points[index - 1] !== null;
      path += `${previous ? "L" : "M"}${x.toFixed(1)},${y(value).toFixed(1)} `;
      chart.append(svg("circle", { cx: x.toFixed(1), cy: y(value).toFixed(1), r: 2.5, className: `dot ${line.className}` }));
    });
    if (path) chart.append(svg("path", { className: `line ${line.className}`, d: path.trim() }));
  }
}

// ---- Jobs ----------------------------------------------------------------

function renderJobs(jobs) {
  const list = byId("jobs-list");
  if (!jobs.length) {
    list.replaceChildren(el("li", { className: "empty" }, "No running jobs."));
    return;
  }
  list.replaceChildren(...jobs.map((job) => el(
    "li",
    { "data-job": job.id },
    el("div", {}, `${job.kind} ${job.id} · ${job.status} · ${job.finished} of ${job.total} done`, job.failed ? `, ${job.failed} failed` : ""),
    el("progress", { max: Math.max(1, job.total), value: job.finished }),
  )));
}

// ---- Recent requests and their traces -------------------------------------

function renderRequests(requests) {
  const rows = requests.map((request) => {
    const open = el("button", { type: "button", className: "link", "aria-label": `Show the trace of request ${request.id}` }, formatTime(request.created_at));
    const row = el(
      "tr",
      { "data-request": request.id, "aria-selected": request.id === view.traceId ? "true" : "false" },
      el("td", {}, open),
      el("td", {}, request.kind === "passthrough" ? "forwarded" : "generation"),
      el("td", {}, el("span", { className: `badge status-${token(request.status)}` }, request.status)),
      el("td", { className: "wrap" }, requestSubject(request)),
      el("td", { className: "num" }, formatMs(request.duration_ms)),
      el("td", {}, request.keys.join(", ") || "–"),
      el("td", { className: "num" }, request.failed_calls ? `${request.llm_calls} (${request.failed_calls} failed)` : request.llm_calls),
      el("td", { title: request.error_message || "" }, request.error_code || ""),
    );
    row.addEventListener("click", () => showTrace(request.id));
    return row;
  });
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 8, className: "empty" }, "No requests match.")));
  byId("requests-table").tBodies[0].replaceChildren(...rows);
}

// A generation's subject and topic, or the model a forwarded call named and its size.
function requestSubject(request) {
  if (request.kind !== "passthrough") return `${request.subject_name} / ${request.topic_name}`;
  const limit = request.max_tokens === null ? "" : `, max_tokens ${request.max_tokens}`;
  return `${request.requested_model || "no model named"}: ${request.message_count} messages${limit}`;
}

async function showTrace(requestId) {
  view.traceId = requestId;
  const section = byId("trace");
  section.hidden = false;
  byId("trace-title").textContent = `Trace of request ${requestId}`;
  byId("trace-summary").textContent = "Loading…";
  document.querySelectorAll("#requests-table tbody tr").forEach((row) => {
    row.setAttribute("aria-selected", row.dataset.request === requestId ? "true" : "false");
  });
  try {
    const trace = await getJson(`${API}/requests/${encodeURIComponent(requestId)}/trace`);
    if (view.traceId === requestId) renderTrace(trace);
  } catch (error) {
    byId("trace-summary").textContent = `Could not load the trace: ${error.message}`;
    byId("waterfall").replaceChildren();
  }
  section.scrollIntoView({ behavior: "smooth", block: "start" });
}

function renderTrace(trace) {
  const request = trace.request;
  const outcome = request.error_code ? `failed with ${request.error_code}` : request.status;
  byId("trace-summary").textContent =
    `${request.kind === "passthrough" ? "Forwarded call, " : ""}${requestSubject(request)}: ${outcome}, ${formatMs(trace.duration_ms)}, ` +
    `${request.llm_calls} LLM attempts on ${request.keys.join(", ") || "no key"}.`;
  const total = Math.max(trace.duration_ms, 1);
  const rows = [el("div", { className: "wf-axis", "aria-hidden": "true" }, el("span", {}, "0 ms"), el("span", {}, formatMs(trace.duration_ms)))];
  for (const { span, depth } of orderedSpans(trace.spans)) rows.push(waterfallRow(span, depth, total));
  byId("waterfall").replaceChildren(...rows);
}

// Each span after its parent, children by start, so the waterfall reads as a tree.
function orderedSpans(spans) {
  const ids = new Set(spans.map((span) => span.span_id));
  const children = new Map();
  for (const span of spans) {
    const parent = ids.has(span.parent_id) ? span.parent_id : null;
    if (!children.has(parent)) children.set(parent, []);
    children.get(parent).push(span);
  }
  const ordered = [];
  const visit = (parent, depth) => {
    const list = (children.get(parent) || []).sort((a, b) => a.offset_ms - b.offset_ms || a.span_id - b.span_id);
    for (const span of list) {
      ordered.push({ span, depth });
      visit(span.span_id, depth + 1);
    }
  };
  visit(null, 0);
  return ordered;
}

function spanDetails(span) {
  const attributes = span.attributes || {};
  const details = [span.kind.replace("_", " "), formatMs(span.duration_ms)];
  // An attempt's name already gives its number and key.
  if (span.kind === "llm_call") details.push(attributes.outcome);
  else if (attributes.key) details.push(attributes.key);
  if (span.kind !== "llm_call" && attributes.error) details.push(attributes.error);
  if (attributes.problems) details.push(`${attributes.problems} problems`);
  if (attributes.hit !== undefined) details.push(attributes.hit ? "hit" : "miss");
  return details.filter(Boolean).join(" · ");
}

function waterfallRow(span, depth, total) {
  const attributes = span.attributes || {};
  const error = attributes.error || null;
  const label = el(
    "div",
    { className: "wf-label" },
    el("span", {}, span.name),
    " ",
    el("span", { className: error ? "detail failed" : "detail" }, spanDetails(span)),
  );
  label.style.paddingLeft = `${depth * 0.9}rem`;

  const bar = el("div", {
    className: `wf-bar kind-${token(span.kind)}${error ? " has-error" : ""}`,
    title: `${span.name}: starts at ${formatMs(span.offset_ms)}, lasts ${span.duration_ms.toFixed(1)} ms`,
  });
  bar.style.left = `${Math.min(100, (100 * span.offset_ms) / total)}%`;
  bar.style.width = `${Math.max(0.3, Math.min(100, (100 * span.duration_ms) / total))}%`;

  return el(
    "div",
    {
      className: "wf-row",
      "data-span": span.span_id,
      "data-parent": span.parent_id,
      "data-kind": span.kind,
      "data-key": attributes.key || null,
      "data-attempt": attributes.attempt || null,
      "data-error": error,
    },
    label,
    el("div", { className: "wf-track" }, bar),
  );
}

// ---- Start ---------------------------------------------------------------

function start() {
  document.querySelectorAll("[data-window]").forEach((button) => {
    button.addEventListener("click", () => {
      view.window = button.dataset.window;
      document.querySelectorAll("[data-window]").forEach((other) => {
        other.setAttribute("aria-pressed", other === button ? "true" : "false");
      });
      poll();
    });
  });
  const filters = byId("request-filters");
  filters.addEventListener("submit", (event) => event.preventDefault());
  filters.addEventListener("input", () => {
    for (const name of Object.keys(view.filters)) view.filters[name] = filters.elements.namedItem(name).value.trim();
    poll();
  });
  byId("trace-close").addEventListener("click", () => {
    view.traceId = null;
    byId("trace").hidden = true;
  });
  document.addEventListener("visibilitychange", poll);
  poll();
  setInterval(poll, POLL_MS);
}

start();
