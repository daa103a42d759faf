// Guardrails: a tester (text -> the guardrail's assessment, with masked output).
import { call } from "./api.js";
import { clear, el, errorBox } from "./dom.js";

export function render(root) {
  const status = el("div"), result = el("div", { "data-testid": "guardrail-result" });
  const guardrail = el("select", { id: "guardrail" });
  const version = el("input", { id: "guardrail-version", value: "DRAFT" });
  const source = el("select", { id: "guardrail-source" }, el("option", { value: "INPUT" }, "INPUT (a user prompt)"), el("option", { value: "OUTPUT" }, "OUTPUT (a model answer)"));
  const text = el("textarea", { id: "guardrail-text", rows: 4, "data-testid": "guardrail-text" });
  const form = el("form", { class: "card" },
    el("div", { class: "row" }, el("div", {}, el("label", { for: "guardrail" }, "Guardrail"), guardrail),
      el("div", {}, el("label", { for: "guardrail-version" }, "Version"), version),
      el("div", {}, el("label", { for: "guardrail-source" }, "Source"), source)),
    el("label", { for: "guardrail-text" }, "Text"), text,
    el("p", {}, el("button", { type: "submit" }, "Apply guardrail")));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(status); clear(result);
    try {
      const out = await call("POST", `/guardrail/${encodeURIComponent(guardrail.value)}/version/${encodeURIComponent(version.value)}/apply`,
        { source: source.value, content: [{ text: { text: text.value } }] });
      result.append(el("div", { class: "card" },
        el("h2", {}, `Action: ${out.action}`), out.actionReason ? el("p", { class: "muted" }, out.actionReason) : null,
        el("label", {}, "Output"), ...(out.outputs || []).map((o) => el("div", { class: "msg assistant" }, o.text)),
        el("label", {}, "Assessments"), el("pre", { class: "code" }, JSON.stringify(out.assessments, null, 2))));
    } catch (error) { status.append(errorBox(error)); }
  });
  root.append(el("h1", {}, "Guardrail tester"), form, status, result);
  call("GET", "/guardrails").then((out) => {
    const list = out.guardrails || [];
    if (!list.length) status.append(el("p", { class: "muted" }, "No guardrails yet: create one with bedrock's CreateGuardrail (see the README)."));
    guardrail.append(...list.map((g) => el("option", { value: g.id }, `${g.name} (${g.id}, version ${g.version})`)));
  }).catch((error) => status.append(errorBox(error)));
}
