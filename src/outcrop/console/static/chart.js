// A small SVG line chart: series of [x, y] points, axes with a few round ticks.
const NS = "http://www.w3.org/2000/svg";
export const COLORS = ["#0b6bcb", "#d9480f", "#2f9e44", "#9c36b5", "#e8590c", "#1098ad"];

function svg(tag, attrs, text) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  if (text !== undefined) node.textContent = text;
  return node;
}

function ticks(lo, hi, n = 4) {
  if (hi === lo) return [lo];
  const step = Math.pow(10, Math.floor(Math.log10((hi - lo) / n)));
  const nice = [1, 2, 5, 10].map((m) => m * step).find((s) => (hi - lo) / s <= n) || step * 10;
  const out = [];
  for (let t = Math.ceil(lo / nice) * nice; t <= hi + 1e-12; t += nice) out.push(+t.toPrecision(6));
  return out;
}

export function lineChart(series, { xFormat = (x) => x, yFormat = (y) => y, label = "" } = {}) {
  const W = 640, H = 220, L = 48, R = 10, T = 12, B = 26;
  const root = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
  const points = series.flatMap((s) => s.points);
  if (!points.length) {
    root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "no data yet"));
    return root;
  }
  let [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
  let [y0, y1] = [Math.min(0, ...points.map((p) => p[1])), Math.max(...points.map((p) => p[1]))];
  if (x0 === x1) x1 = x0 + 1;
  if (y0 === y1) y1 = y0 + 1;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => H - B - ((y - y0) / (y1 - y0)) * (H - T - B);
  for (const t of ticks(y0, y1)) {
    root.append(svg("line", { x1: L, x2: W - R, y1: sy(t), y2: sy(t), stroke: "#eef0f2" }));
    root.append(svg("text", { x: L - 4, y: sy(t) + 3, "text-anchor": "end" }, yFormat(t)));
  }
  for (const t of ticks(x0, x1, 5)) {
    root.append(svg("text", { x: sx(t), y: H - 8, "text-anchor": "middle" }, xFormat(t)));
  }
  root.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, stroke: "#aab4be" }));
  root.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, stroke: "#aab4be" }));
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
    const color = s.color || COLORS[i % COLORS.length];
    root.append(svg("path", { d, fill: "none", stroke: color, "stroke-width": 2, "data-series": s.name }));
    if (s.points.length === 1) {
      const [x, y] = s.points[0];
      root.append(svg("circle", { cx: sx(x), cy: sy(y), r: 3, fill: color }));
    }
  });
  return root;
}

export function legend(series) {
  const box = document.createElement("div");
  box.className = "legend";
  series.forEach((s, i) => {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = s.color || COLORS[i % COLORS.length];
    item.append(swatch, document.createTextNode(s.name));
    box.append(item);
  });
  return box;
}
