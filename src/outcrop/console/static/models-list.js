// The text models a page can pick from (embedding models cannot chat).
import { call } from "./api.js";
let cached = null;
export async function chatModels() {
  if (!cached) cached = call("GET", "/console/api/models").then((out) => out.models.filter((m) => !m.embedding));
  try { return await cached; } catch (error) { cached = null; throw error; }
}
export function modelSelect(models, chosen, attrs = {}) {
  const select = document.createElement("select");
  for (const [k, v] of Object.entries(attrs)) select.setAttribute(k, v);
  for (const m of models) {
    const option = document.createElement("option");
    option.value = m.arn || m.modelId;
    option.textContent = `${m.name} (${m.modelId})${m.installed ? "" : " — not pulled"}`;
    if (option.value === chosen) option.selected = true;
    select.append(option);
  }
  return select;
}
