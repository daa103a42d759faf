// Usage: the server's own metrics over time (sampled by the console), per model.
import { call } from "./api.js";
import { legend, lineChart } from "./chart.js";
import { clear, el, errorBox } from "./dom.js";

const PRICE = "outcrop.pricePerHour";

export function render(root) {
  const status = el("div");
  const kpis = el("div", { class: "kpis", "data-testid": "usage-kpis" });
  const charts = el("div");
  const perModel = el("tbody");
  const price = el("input", { id: "price", type: "number", min: "0", step: "0.01", value: localStorage.getItem(PRICE) || "1.00", "data-testid": "price" });
  let last = null;
  price.addEventListener("input", () => { localStorage.setItem(PRICE, price.value); if (last) draw(last); });

  async function refresh() {
    try { last = await call("GET", "/console/api/usage"); clear(status); draw(last); }
    catch (error) { clear(status).append(errorBox(error)); }
  }

  function draw({ samples }) {
    const first = samples[0], end = samples[samples.length - 1];
    const models = [...new Set(samples.flatMap((s) => Object.keys(s.models)))].sort();
    const total = (key) => models.reduce((sum, m) => sum + ((end.models[m] || {})[key] || 0), 0);
    const tokensIn = total("in"), tokensOut = total("out");
    // Cost per million tokens: the machine's hourly price spread over what it served in the window.
    const hours = (end.t - first.t) / 3600;
    const windowTokens = models.reduce((sum, m) => sum + delta(first, end, m, "in") + delta(first, end, m, "out"), 0);
    const perMillion = windowTokens > 0 ? (Number(price.value) * hours) / (windowTokens / 1e6) : null;
    clear(kpis).append(
      kpi("Requests", end.requests, "requests"), kpi("Errors", end.errors, "errors"),
      kpi("Tokens in", tokensIn, "tokens-in"), kpi("Tokens out", tokensOut, "tokens-out"),
      kpi(`$ per million tokens at $${Number(price.value).toFixed(2)}/h`, perMillion === null ? "–" : `$${perMillion.toFixed(2)}`, "cost"));
    const series = (fn) => models.map((m) => ({ name: m, points: pairs(samples).map(([a, b]) => [b.t, fn(a, b, m)]).filter((p) => p[1] !== null) }));
    const tokensPerS = series((a, b, m) => (delta(a, b, m, "in") + delta(a, b, m, "out")) / Math.max(b.t - a.t, 1e-3));
    const ttft = series((a, b, m) => mean(a, b, m, "ttft"));
    const itl = series((a, b, m) => mean(a, b, m, "itl"));
    const time = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    clear(charts).append(
      el("div", { class: "card" }, el("h2", {}, "Tokens per second (in + out)"), legend(tokensPerS), lineChart(tokensPerS, { xFormat: time, yFormat: (y) => y.toFixed(0) })),
      el("div", { class: "columns" },
        el("div", { class: "card" }, el("h2", {}, "Time to first token (ms)"), legend(ttft), lineChart(ttft, { xFormat: time, yFormat: (y) => y.toFixed(0) })),
        el("div", { class: "card" }, el("h2", {}, "Inter-token latency (ms)"), legend(itl), lineChart(itl, { xFormat: time, yFormat: (y) => y.toFixed(1) }))));
    clear(perModel).append(...models.map((m) => {
      const v = end.models[m] || {};
      const avg = (k) => (v[k + "Count"] ? ((v[k + "Sum"] / v[k + "Count"]) * 1000).toFixed(1) : "–");
      return el("tr", {}, el("td", {}, m), el("td", {}, v.ttftCount || 0), el("td", {}, v.in || 0), el("td", {}, v.out || 0), el("td", {}, avg("ttft")), el("td", {}, avg("itl")));
    }));
  }

  root.append(el("h1", {}, "Usage"), status,
    el("div", { class: "card" }, el("label", { for: "price" }, "Machine cost ($ per hour)"), price), kpis, charts,
    el("div", { class: "card scroll" }, el("h2", {}, "Per model since the server started"),
      el("table", { "data-testid": "usage-models" }, el("thead", {}, el("tr", {}, ...["Model", "Answers", "Tokens in", "Tokens out", "Mean TTFT (ms)", "Mean ITL (ms)"].map((h) => el("th", {}, h)))), perModel)));
  refresh();
  const poll = setInterval(refresh, 2000);
  return () => clearInterval(poll);
}

function kpi(label, value, id) { return el("div", { class: "kpi", "data-testid": `kpi-${id}` }, el("b", {}, typeof value === "number" ? value.toLocaleString() : value), label); }
function pairs(samples) { return samples.slice(1).map((s, i) => [samples[i], s]); }
function delta(a, b, m, key) { return ((b.models[m] || {})[key] || 0) - ((a.models[m] || {})[key] || 0); }
function mean(a, b, m, key) {
  const n = delta(a, b, m, key + "Count");
  return n > 0 ? (delta(a, b, m, key + "Sum") / n) * 1000 : null;
}
