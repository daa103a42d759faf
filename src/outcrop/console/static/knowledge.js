// Knowledge bases: a retrieve tester (query -> ranked chunks with scores and sources).
import { call } from "./api.js";
import { clear, el, errorBox } from "./dom.js";

export function render(root) {
  const status = el("div"), results = el("ol", { "data-testid": "kb-results" });
  const kb = el("select", { id: "kb", "data-testid": "kb" });
  const query = el("input", { id: "kb-query", placeholder: "What do you want to find?", "data-testid": "kb-query" });
  const count = el("input", { id: "kb-count", type: "number", min: "1", max: "100", value: "5" });
  const form = el("form", { class: "card" },
    el("label", { for: "kb" }, "Knowledge base"), kb,
    el("div", { class: "row" }, el("div", {}, el("label", { for: "kb-query" }, "Query"), query),
      el("div", {}, el("label", { for: "kb-count" }, "Results"), count)),
    el("p", {}, el("button", { type: "submit" }, "Retrieve")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(status); clear(results);
    try {
      const out = await call("POST", `/knowledgebases/${encodeURIComponent(kb.value)}/retrieve`, {
        retrievalQuery: { text: query.value },
        retrievalConfiguration: { vectorSearchConfiguration: { numberOfResults: Number(count.value) } },
      });
      if (!out.retrievalResults.length) status.append(el("p", { class: "muted" }, "No chunks matched."));
      results.append(...out.retrievalResults.map((r) => el("li", { class: "card" },
        el("div", { class: "stats" }, `score ${r.score === undefined ? "–" : r.score.toFixed(4)} · ${source(r.location)}`),
        el("div", { class: "msg" }, r.content && r.content.text))));
    } catch (error) { status.append(errorBox(error)); }
  });
  root.append(el("h1", {}, "Knowledge base retrieve tester"), form, status, results);
  call("POST", "/knowledgebases/", {}).then((out) => {
    const list = out.knowledgeBaseSummaries || [];
    if (!list.length) status.append(el("p", { class: "muted" }, "No knowledge bases yet: create one with bedrock-agent's CreateKnowledgeBase (see the README)."));
    kb.append(...list.map((k) => el("option", { value: k.knowledgeBaseId }, `${k.name} (${k.knowledgeBaseId}, ${k.status})`)));
  }).catch((error) => status.append(errorBox(error)));
}

function source(location) {
  if (!location) return "unknown source";
  for (const value of Object.values(location)) {
    if (value && typeof value === "object" && (value.uri || value.url || value.id)) return value.uri || value.url || `document ${value.id}`;
  }
  return location.type || "unknown source";
}
