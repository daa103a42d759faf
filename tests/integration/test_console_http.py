"""The console over plain HTTP (no browser): assets, sign-in, cookie flags, CSRF on the APIs
the pages call, and the console's own read-outs."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import SMOL, TEST_API_KEY, TEST_SECRET

pytestmark = pytest.mark.slow


def signed_in(server) -> tuple[httpx.Client, str]:
    client = httpx.Client(base_url=server.url, timeout=120)
    r = client.post("/console/session", json={"apiKey": TEST_API_KEY})
    assert r.status_code == 200, r.text
    return client, r.json()["csrfToken"]


def test_page_and_assets_are_served_with_a_strict_content_policy(server):
    page = httpx.get(server.url + "/console/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert "script-src 'self'" in page.headers["content-security-policy"]
    js = httpx.get(server.url + "/console/static/main.js")
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert httpx.get(server.url + "/console/static/../server.py").status_code == 404
    assert httpx.get(server.url + "/console/static/nothing.js").status_code == 404


def test_wrong_key_is_refused_and_the_cookie_is_httponly_and_strict(server):
    bad = httpx.post(server.url + "/console/session", json={"apiKey": "nope"})
    assert bad.status_code == 401 and "not this server's API key" in bad.json()["message"]
    good = httpx.post(server.url + "/console/session", json={"apiKey": TEST_SECRET})
    cookie = good.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie


def test_the_session_opens_the_apis_and_changes_need_the_csrf_token(server):
    client, csrf = signed_in(server)
    assert client.get("/foundation-models").status_code == 200
    body = {"model": SMOL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4}
    refused = client.post("/v1/chat/completions", json=body)
    # /v1 speaks OpenAI's errors: a refused credential is its 401 invalid_api_key.
    assert refused.status_code == 401 and "CSRF" in refused.json()["error"]["message"]
    ok = client.post("/v1/chat/completions", json=body, headers={"x-outcrop-csrf": csrf})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"]
    pull = client.post("/console/api/models/pull", params={"modelId": SMOL})
    assert pull.status_code == 403
    client.request("DELETE", "/console/session", headers={"x-outcrop-csrf": csrf})
    assert client.get("/foundation-models").status_code == 403
    assert client.get("/console/api/usage").status_code == 401


def test_read_outs_models_usage_and_job_steps(server):
    client, _ = signed_in(server)
    models = {m["modelId"]: m for m in client.get("/console/api/models").json()["models"]}
    assert models[SMOL]["installed"] and models[SMOL]["format"]
    usage = client.get("/console/api/usage").json()
    assert usage["samples"] and "requests" in usage["samples"][-1]
    missing = client.get("/console/api/customization-steps", params={"jobIdentifier": "nope"})
    assert missing.status_code == 404 and missing.json()["__type"] == "ResourceNotFoundException"
