// Playground: streaming chat with one model, or the same prompt to 2-3 models side by side.
import { streamChat } from "./api.js";
import { chatModels, modelSelect } from "./models-list.js";
import { clear, el, errorBox } from "./dom.js";

const KEEP = "outcrop.playground"; // the typed prompt and settings survive a sign-in
function saved() { try { return JSON.parse(sessionStorage.getItem(KEEP)) || {}; } catch { return {}; } }

export function render(root) {
  const memory = saved();
  const form = {
    system: el("textarea", { id: "system", rows: 3, placeholder: "Optional system prompt", value: memory.system || "" }),
    temperature: el("input", { id: "temperature", type: "number", step: "0.1", min: "0", max: "2", value: memory.temperature ?? "0.7" }),
    topP: el("input", { id: "top-p", type: "number", step: "0.05", min: "0", max: "1", value: memory.topP ?? "0.9" }),
    maxTokens: el("input", { id: "max-tokens", type: "number", min: "1", value: memory.maxTokens ?? "256" }),
    stop: el("input", { id: "stop", placeholder: "e.g. ###, END", value: memory.stop || "" }),
    compare: el("select", { id: "compare", "data-testid": "compare" },
      el("option", { value: "1" }, "One model"), el("option", { value: "2" }, "Compare 2 models"), el("option", { value: "3" }, "Compare 3 models")),
    prompt: el("textarea", { id: "prompt", rows: 4, placeholder: "Ask something…", "data-testid": "prompt", value: memory.prompt || "" }),
  };
  form.compare.value = String(memory.compare || 1);
  const send = el("button", { type: "submit", "data-testid": "send" }, "Send");
  const stop = el("button", { type: "button", class: "secondary", disabled: true }, "Stop");
  const reset = el("button", { type: "button", class: "secondary" }, "New chat");
  const showCode = el("button", { type: "button", class: "secondary", "data-testid": "show-code" }, "Show code");
  const code = el("pre", { class: "code", hidden: true, "data-testid": "code" });
  const status = el("div");
  const columnsBox = el("div", { class: "columns" });
  let models = [], columns = [], controller = null;

  function remember() {
    sessionStorage.setItem(KEEP, JSON.stringify({
      system: form.system.value, temperature: form.temperature.value, topP: form.topP.value,
      maxTokens: form.maxTokens.value, stop: form.stop.value, prompt: form.prompt.value,
      compare: Number(form.compare.value), models: columns.map((c) => c.select.value),
    }));
  }
  for (const input of Object.values(form)) input.addEventListener("input", remember);

  function layout() {
    const n = Number(form.compare.value);
    const chosen = saved().models || [];
    // Loaded models first (they answer at once), then installed ones.
    const ready = [...models.filter((m) => m.loaded), ...models.filter((m) => m.installed && !m.loaded)];
    const defaults = ready.map((m) => m.arn || m.modelId);
    columns = [];
    clear(columnsBox);
    for (let i = 0; i < n; i++) {
      const pick = chosen[i] || defaults[i] || defaults[0] || (models[0] && models[0].modelId);
      const select = modelSelect(models, pick, { "data-testid": `model-${i}`, "aria-label": `Model ${i + 1}` });
      select.addEventListener("change", () => { column.history = []; clear(column.transcript); remember(); });
      const column = { select, history: [], transcript: el("div", { class: "transcript", "data-testid": `transcript-${i}` }) };
      columns.push(column);
      columnsBox.append(el("div", { class: "card" }, select, column.transcript));
    }
    remember();
  }
  form.compare.addEventListener("change", layout);
  reset.addEventListener("click", () => { for (const c of columns) { c.history = []; clear(c.transcript); } clear(code); code.hidden = true; });

  function params() {
    const stops = form.stop.value.split(",").map((s) => s.trim()).filter(Boolean);
    const out = { temperature: Number(form.temperature.value), top_p: Number(form.topP.value), max_tokens: Number(form.maxTokens.value) };
    if (stops.length) out.stop = stops;
    return out;
  }

  async function ask(column, text, signal) {
    const messages = [];
    if (form.system.value.trim()) messages.push({ role: "system", content: form.system.value });
    messages.push(...column.history, { role: "user", content: text });
    column.transcript.append(el("div", { class: "msg user" }, text));
    const answer = el("div", { class: "msg assistant", "data-testid": "answer" });
    const stats = el("div", { class: "stats", "data-testid": "stats" }, "waiting for the first token…");
    column.transcript.append(answer, stats);
    const started = performance.now();
    let first = null, reply = "";
    try {
      const { usage } = await streamChat({ model: column.select.value, messages, ...params() }, (piece) => {
        if (first === null) first = performance.now();
        reply += piece;
        answer.append(document.createTextNode(piece)); // each piece as it arrives
        column.transcript.scrollTop = column.transcript.scrollHeight;
      }, signal);
      const end = performance.now();
      column.history.push({ role: "user", content: text }, { role: "assistant", content: reply });
      const out = usage ? usage.completion_tokens : null;
      const rate = out && first !== null && end > first ? (out / ((end - first) / 1000)).toFixed(1) : "–";
      stats.textContent = `TTFT ${first === null ? "–" : Math.round(first - started)} ms · ${rate} tokens/s · ` +
        `${usage ? usage.prompt_tokens : "?"} in / ${out ?? "?"} out tokens · ${Math.round(end - started)} ms total`;
      return true;
    } catch (error) {
      stats.replaceWith(errorBox(error));
      return false;
    }
  }

  const formEl = el("form", { class: "card" },
    el("label", { for: "prompt" }, "Prompt"), form.prompt,
    el("p", { class: "actions" }, send, stop, reset, showCode));
  formEl.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = form.prompt.value.trim();
    if (!text || controller) return;
    clear(status);
    remember();
    controller = new AbortController();
    send.disabled = true; stop.disabled = false;
    const done = await Promise.all(columns.map((c) => ask(c, text, controller.signal)));
    controller = null; send.disabled = false; stop.disabled = true;
    if (done.every(Boolean)) { form.prompt.value = ""; remember(); } // keep it to retry
    if (!code.hidden) code.textContent = boto3(columns[0], form.prompt.value.trim());
  });
  stop.addEventListener("click", () => controller && controller.abort());
  showCode.addEventListener("click", () => {
    code.hidden = !code.hidden;
    code.textContent = boto3(columns[0], form.prompt.value.trim());
  });

  function boto3(column, text) {
    const p = params();
    const inference = { temperature: p.temperature, topP: p.top_p, maxTokens: p.max_tokens };
    if (p.stop) inference.stopSequences = p.stop;
    // A typed prompt: the next turn. None: the request just sent (the history less its answer).
    const turns = text ? [...column.history, { role: "user", content: text }]
      : column.history.length ? column.history.slice(0, -1) : [{ role: "user", content: "Hello!" }];
    const messages = turns.map((m) => ({ role: m.role, content: [{ text: m.content }] }));
    const lines = [
      "import boto3", "",
      `client = boto3.client("bedrock-runtime", endpoint_url=${JSON.stringify(location.origin)}, region_name="us-east-1")`,
      "response = client.converse(",
      `    modelId=${JSON.stringify(column.select.value)},`,
    ];
    if (form.system.value.trim()) lines.push(`    system=[{"text": ${JSON.stringify(form.system.value)}}],`);
    lines.push(`    messages=${JSON.stringify(messages)},`, `    inferenceConfig=${JSON.stringify(inference)},`, ")",
      'print(response["output"]["message"]["content"][0]["text"])',
      'print(response["usage"], response["metrics"])');
    return lines.join("\n");
  }

  const settings = el("div", { class: "card" },
    el("label", { for: "compare" }, "Mode"), form.compare,
    el("label", { for: "system" }, "System prompt"), form.system,
    el("div", { class: "row" },
      el("div", {}, el("label", { for: "temperature" }, "Temperature"), form.temperature),
      el("div", {}, el("label", { for: "top-p" }, "Top P"), form.topP)),
    el("label", { for: "max-tokens" }, "Max tokens"), form.maxTokens,
    el("label", { for: "stop" }, "Stop sequences (comma-separated)"), form.stop);
  root.append(el("h1", {}, "Playground"),
    el("div", { class: "grid2" }, settings, el("div", {}, formEl, status, columnsBox, code)));

  chatModels().then((list) => { models = list; layout(); }).catch((error) => status.append(errorBox(error)));
  return () => controller && controller.abort();
}
