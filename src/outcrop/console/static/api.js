// Calls to the server's public APIs with the console's session: the cookie travels by
// itself (HttpOnly), the CSRF token goes in a header on every change.
let csrfToken = null;
export function setCsrf(token) { csrfToken = token; }

export class ApiError extends Error {
  constructor(status, message, code) { super(message); this.status = status; this.code = code; }
}

function headers(method, json) {
  const h = {};
  if (json) h["content-type"] = "application/json";
  if (csrfToken && method !== "GET" && method !== "HEAD") h["x-outcrop-csrf"] = csrfToken;
  return h;
}

export async function call(method, path, body, options = {}) {
  const response = await fetch(path, {
    method, headers: headers(method, body !== undefined), credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body), signal: options.signal,
  });
  if (!response.ok) throw await toError(response);
  const text = await response.text();
  return text ? JSON.parse(text) : {};
}

function needsSignIn(status, message) {
  return status === 401 || (status === 403 && /Missing Authentication Token|CSRF|console session/i.test(message));
}

export async function toError(response) {
  let data = {};
  try { data = await response.json(); } catch { /* not JSON: fall back to the status */ }
  return errorFrom(response.status, data, response.headers.get("x-amzn-errortype"));
}

function errorFrom(status, data, typeHeader) {
  const message = data.message || data.Message || (data.error && data.error.message) || `The server answered HTTP ${status}.`;
  const code = data.__type || (data.error && (data.error.code || data.error.type)) || (typeHeader || "").split(":")[0];
  if (needsSignIn(status, message)) window.dispatchEvent(new CustomEvent("outcrop:signin"));
  return new ApiError(status, message, code);
}

// OpenAI-style streaming chat: calls onText(piece) as each SSE chunk arrives.
export async function streamChat(body, onText, signal) {
  const response = await fetch("/v1/chat/completions", {
    method: "POST", headers: headers("POST", true), credentials: "same-origin", signal,
    body: JSON.stringify({ ...body, stream: true, stream_options: { include_usage: true } }),
  });
  if (!response.ok) throw await toError(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", usage = null, finish = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, cut); buffer = buffer.slice(cut + 2);
      for (const line of frame.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return { usage, finish };
        const chunk = JSON.parse(data);
        if (chunk.error) throw errorFrom(500, chunk, null);
        if (chunk.usage) usage = chunk.usage;
        for (const choice of chunk.choices || []) {
          if (choice.delta && choice.delta.content) onText(choice.delta.content);
          if (choice.finish_reason) finish = choice.finish_reason;
        }
      }
    }
  }
  return { usage, finish };
}
