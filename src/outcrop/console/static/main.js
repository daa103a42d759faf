// The console shell: session check, sign-in, hash routing between pages.
import { call, setCsrf } from "./api.js";
import { clear, el, errorBox } from "./dom.js";

const PAGES = {
  playground: () => import("./playground.js"),
  models: () => import("./models.js"),
  jobs: () => import("./jobs.js"),
  usage: () => import("./usage.js"),
  knowledge: () => import("./knowledge.js"),
  guardrails: () => import("./guardrails.js"),
};
const main = document.getElementById("main");
const state = { session: null, cleanup: null, signingIn: false };

async function start() {
  window.addEventListener("hashchange", route);
  window.addEventListener("outcrop:signin", () => showSignIn());
  document.getElementById("signout").addEventListener("click", signOut);
  try {
    state.session = await call("GET", "/console/session");
  } catch (error) {
    clear(main).append(errorBox(error));
    return;
  }
  setCsrf(state.session.csrfToken);
  if (!state.session.signedIn) return showSignIn();
  route();
}

function pageName() {
  const name = location.hash.replace(/^#\/?/, "").split(/[?/]/)[0];
  return PAGES[name] ? name : "playground";
}

async function route() {
  if (state.signingIn) return;
  if (state.cleanup) { state.cleanup(); state.cleanup = null; }
  const name = pageName();
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
  document.getElementById("signout").hidden = !state.session || !state.session.authRequired;
  const root = clear(main);
  try {
    const page = await PAGES[name]();
    if (name !== pageName() || state.signingIn) return; // navigated away while loading
    state.cleanup = page.render(root) || null;
  } catch (error) {
    root.append(errorBox(error));
  }
}

function showSignIn(message) {
  if (state.signingIn) return;
  state.signingIn = true;
  if (state.cleanup) { state.cleanup(); state.cleanup = null; }
  setCsrf(null);
  document.getElementById("signout").hidden = true;
  const linkExpired = location.hash.includes("link=expired");
  const key = el("input", { type: "password", id: "api-key", autocomplete: "current-password", required: true, "data-testid": "api-key" });
  const status = el("div");
  if (linkExpired) status.append(errorBox(new Error("That sign-in link was already used or has expired.")));
  else if (message) status.append(errorBox(new Error(message)));
  const form = el("form", { class: "card signin", "data-testid": "signin" },
    el("h1", {}, "Sign in to outcrop"),
    el("p", { class: "muted" }, "Use the server's API key (OUTCROP_API_KEY) or its secret access key, or the one-time link `outcrop serve` printed."),
    el("label", { for: "api-key" }, "Key"), key,
    el("p", {}, el("button", { type: "submit" }, "Sign in")), status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    clear(status);
    try {
      const out = await call("POST", "/console/session", { apiKey: key.value });
      state.session = { authRequired: true, signedIn: true, csrfToken: out.csrfToken };
      setCsrf(out.csrfToken);
      state.signingIn = false;
      if (linkExpired) location.hash = "#/playground";
      route();
    } catch (error) {
      status.append(errorBox(error));
    }
  });
  clear(main).append(form);
  key.focus();
}

async function signOut() {
  try { await call("DELETE", "/console/session"); } catch { /* signed out either way */ }
  state.session = { authRequired: true, signedIn: false, csrfToken: null };
  showSignIn();
}

start();
