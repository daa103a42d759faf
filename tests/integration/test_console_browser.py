"""The web console end to end in a real headless Chromium (Playwright driving Debian's
``chromium``): sign-in, streamed chat, side-by-side models, a fine-tuning job's live loss
chart and stop button, usage moving, and markup from answers and job names shown as text.

Screenshots of every page land in docs/console/ (linked from the README); first paint of
each page from a cold browser cache is measured and written to docs/console/first-paint.json
(reported, not asserted: the machine is shared).
"""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from tests.conftest import EMBED, GEMMA, REGION, SMOL, TEST_API_KEY, start_server, stop_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed (pip install playwright)"
)
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        CHROMIUM is None, reason="no chromium on PATH (apt-get install -y chromium)"
    ),
]
SHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"
PAGES = ["playground", "models", "jobs", "usage", "knowledge", "guardrails"]
QUESTIONS = ["What is the mascot of the outcrop project?", "Who is Pebble?"]
ANSWERS = ["The outcrop project's mascot is a purple armadillo named Pebble."]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("console")
    server = start_server(tmp)
    yield server, tmp
    stop_server(server)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture()
def page(browser, live):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"uncaught script errors: {errors}"


def sign_in(page, url: str, key: str = TEST_API_KEY, hash_: str = "#/playground") -> None:
    page.goto(f"{url}/console/{hash_}")
    page.get_by_test_id("api-key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def shot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def test_wrong_key_is_refused_in_words_and_the_right_key_signs_in(page, live):
    server, _ = live
    sign_in(page, server.url, key="not-the-key")
    sync_api.expect(page.get_by_test_id("error")).to_contain_text("not this server's API key")
    shot(page, "signin")
    page.get_by_test_id("api-key").fill(TEST_API_KEY)
    page.get_by_role("button", name="Sign in").click()
    sync_api.expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    cookie = next(c for c in page.context.cookies() if c["name"] == "outcrop_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"


def test_chat_streams_tokens_as_they_arrive(page, live):
    server, _ = live
    sign_in(page, server.url)
    page.get_by_test_id("model-0").select_option(SMOL)
    page.locator("#temperature").fill("0")
    page.locator("#max-tokens").fill("60")
    page.get_by_test_id("prompt").fill("Write two sentences about the sea.")
    page.evaluate(
        """() => {
        window.__growth = [];
        const box = document.querySelector('[data-testid=transcript-0]');
        new MutationObserver(() => {
          const a = box.querySelector('[data-testid=answer]');
          if (a) window.__growth.push([performance.now(), a.textContent.length]);
        }).observe(box, {childList: true, subtree: true, characterData: true});
    }"""
    )
    page.get_by_test_id("send").click()
    stats = page.get_by_test_id("transcript-0").get_by_test_id("stats")
    sync_api.expect(stats).to_contain_text("tokens/s", timeout=120_000)
    growth = page.evaluate("window.__growth")
    lengths = sorted({n for _, n in growth if n})
    # Many distinct partial lengths over time: the text arrived piece by piece, not at once.
    assert len(lengths) >= 5, growth
    assert growth[-1][0] - growth[0][0] > 0
    assert re.search(r"TTFT \d+ ms · [\d.]+ tokens/s · \d+ in / \d+ out tokens", stats.inner_text())
    shot(page, "playground-chat")


def test_compare_two_models_side_by_side_with_code(page, live):
    server, _ = live
    sign_in(page, server.url)
    page.get_by_test_id("compare").select_option("2")
    page.get_by_test_id("model-0").select_option(SMOL)
    page.get_by_test_id("model-1").select_option(GEMMA)
    page.locator("#max-tokens").fill("40")
    page.locator("#system").fill("Answer in one short sentence.")
    page.get_by_test_id("prompt").fill("Name a color of the sky.")
    page.get_by_test_id("send").click()
    for i in (0, 1):
        column = page.get_by_test_id(f"transcript-{i}")
        sync_api.expect(column.get_by_test_id("stats")).to_contain_text("tokens/s", timeout=180_000)
        assert column.get_by_test_id("answer").inner_text().strip()
    page.get_by_test_id("show-code").click()
    code = page.get_by_test_id("code").inner_text()
    assert "client.converse(" in code and SMOL in code and '"maxTokens":40' in code
    assert "Answer in one short sentence." in code and "Name a color of the sky." in code
    shot(page, "playground-compare")


def test_an_api_error_is_shown_in_place_in_words(page, live):
    server, _ = live
    sign_in(page, server.url)
    page.locator("#max-tokens").fill("-3")
    page.get_by_test_id("prompt").fill("Hello")
    page.get_by_test_id("send").click()
    error = page.get_by_test_id("transcript-0").get_by_test_id("error")
    sync_api.expect(error).to_contain_text("max_tokens")
    sync_api.expect(page.get_by_test_id("prompt")).to_have_value("Hello")  # kept to retry


def test_an_ended_session_returns_to_sign_in_and_keeps_the_prompt(page, live):
    server, _ = live
    sign_in(page, server.url)
    page.get_by_test_id("prompt").fill("a prompt I do not want to type twice")
    page.context.clear_cookies()  # what an expired session looks like to the browser
    page.get_by_test_id("send").click()
    sync_api.expect(page.get_by_test_id("signin")).to_be_visible()
    page.get_by_test_id("api-key").fill(TEST_API_KEY)
    page.get_by_role("button", name="Sign in").click()
    sync_api.expect(page.get_by_test_id("prompt")).to_have_value(
        "a prompt I do not want to type twice"
    )


def test_markup_in_a_model_answer_renders_as_text(page, live):
    server, _ = live
    sign_in(page, server.url)
    evil = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script><b>bold</b>'
    # The answer arrives exactly as the API frames it (SSE chunks), carrying markup.
    chunks = [
        {"choices": [{"index": 0, "delta": {"content": piece}}]} for piece in (evil[:20], evil[20:])
    ]
    chunks.append({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    page.route(
        "**/v1/chat/completions",
        lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body),
    )
    page.get_by_test_id("prompt").fill('<img src=y onerror="window.__xss=3">')
    page.get_by_test_id("send").click()
    answer = page.get_by_test_id("transcript-0").get_by_test_id("answer")
    sync_api.expect(answer).to_have_text(evil)
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img, main b, main script").count() == 0


def test_a_job_name_with_markup_is_shown_as_text(page, live):
    server, tmp = live
    sign_in(page, server.url, hash_="#/jobs")
    page.get_by_test_id("job-name").fill('<img src=x onerror="window.__xss=1">')
    page.locator("#model-name").fill("xss-model")
    page.get_by_test_id("train-uri").fill((tmp / "none.jsonl").as_uri())
    page.get_by_test_id("output-uri").fill((tmp / "out").as_uri())
    # The form's pattern would stop it in the browser; send it anyway to see the API's answer.
    page.evaluate("document.querySelector('#job-name').removeAttribute('pattern')")
    page.get_by_test_id("create-job").click()
    error = page.locator("form").get_by_test_id("error")
    sync_api.expect(error).to_contain_text("jobName")
    assert page.evaluate("window.__xss") is None and page.locator("main img").count() == 0


def test_fine_tuning_job_shows_a_live_loss_chart_and_stops(page, live):
    server, tmp = live
    rows = [{"prompt": QUESTIONS[i % 2], "completion": ANSWERS[0]} for i in range(64)]
    train = tmp / "train.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    sign_in(page, server.url, hash_="#/jobs")
    page.get_by_test_id("job-name").fill("console-pebble")
    page.get_by_test_id("base-model").select_option(SMOL)
    page.get_by_test_id("train-uri").fill(train.as_uri())
    page.get_by_test_id("output-uri").fill((tmp / "pebble-out").as_uri())
    page.locator("#epochs").fill("10")
    page.locator("#lr").fill("0.002")
    page.locator("#max-len").fill("128")
    page.get_by_test_id("create-job").click()
    chart = page.get_by_test_id("loss-chart")
    deadline = time.monotonic() + 240
    seen: list[int] = []
    while time.monotonic() < deadline and not page.locator("form").get_by_test_id("error").count():
        if chart.count():
            n = int(chart.get_attribute("data-points") or 0)
            if not seen or n != seen[-1]:
                seen.append(n)
            if len([s for s in seen if s > 0]) >= 3:
                break
        time.sleep(0.5)
    page_text = page.locator("main").inner_text()[:3000]
    assert len([s for s in seen if s > 0]) >= 3, f"the chart did not grow: {seen}\n{page_text}"
    assert page.get_by_test_id("loss-chart").locator("path[data-series]").count() == 1
    sync_api.expect(page.get_by_test_id("loss-summary")).to_contain_text("training loss")
    for table in ("import-jobs", "batch-jobs", "ingestion-jobs"):
        assert page.get_by_test_id(table).get_by_test_id("error").count() == 0, table
    shot(page, "jobs")
    page.get_by_test_id("stop-job").click()
    sync_api.expect(page.get_by_test_id("job-detail")).to_contain_text(
        re.compile("Stopp(ing|ed)"), timeout=60_000
    )
    status = server.client("bedrock").get_model_customization_job(jobIdentifier="console-pebble")
    assert status["status"] in ("Stopping", "Stopped")


def test_usage_moves_after_requests(page, live):
    server, _ = live
    sign_in(page, server.url, hash_="#/usage")
    kpi = page.get_by_test_id("kpi-tokens-out").locator("b")
    sync_api.expect(kpi).not_to_have_text("")
    before = int(kpi.inner_text().replace(",", "") or 0)
    server.client("bedrock-runtime").converse(
        modelId=SMOL,
        messages=[{"role": "user", "content": [{"text": "Count to five."}]}],
        inferenceConfig={"maxTokens": 20},
    )
    deadline = time.monotonic() + 20
    while int(kpi.inner_text().replace(",", "") or 0) <= before:
        assert time.monotonic() < deadline, "the usage page did not move"
        time.sleep(0.5)
    sync_api.expect(page.get_by_test_id("usage-models")).to_contain_text(SMOL)
    time.sleep(2.5)  # one more sample, so the charts have a line
    shot(page, "usage")


def test_models_page_shows_installed_and_loaded_models(page, live):
    server, _ = live
    sign_in(page, server.url, hash_="#/models")
    row = page.locator(f'tr[data-model="{SMOL}"]')
    sync_api.expect(row).to_contain_text("installed")
    sync_api.expect(row).to_contain_text("loaded")
    shot(page, "models")


def test_guardrail_tester_shows_the_assessment_and_masked_output(page, live):
    server, _ = live
    bedrock = server.client("bedrock")
    made = bedrock.create_guardrail(
        name="console-pii",
        blockedInputMessaging="blocked",
        blockedOutputsMessaging="blocked",
        sensitiveInformationPolicyConfig={
            "piiEntitiesConfig": [{"type": "EMAIL", "action": "ANONYMIZE"}]
        },
    )
    sign_in(page, server.url, hash_="#/guardrails")
    page.locator("#guardrail").select_option(made["guardrailId"])
    page.get_by_test_id("guardrail-text").fill("Write to jane@example.com please.")
    page.get_by_role("button", name="Apply guardrail").click()
    result = page.get_by_test_id("guardrail-result")
    sync_api.expect(result).to_contain_text("{EMAIL}")
    sync_api.expect(result).to_contain_text("GUARDRAIL_INTERVENED")
    shot(page, "guardrails")


def test_first_paint_of_each_page_from_a_cold_cache(browser, live):
    server, _ = live
    warm = browser.new_context()
    sign_in(warm.new_page(), server.url)
    cookies = [c for c in warm.cookies() if c["name"] == "outcrop_console"]
    warm.close()
    timings = {}
    for name in ["signin", *PAGES]:
        context = browser.new_context()  # a new context: an empty cache
        if name != "signin":
            context.add_cookies(cookies)
        page = context.new_page()
        page.goto(f"{server.url}/console/#/{name}")
        page.wait_for_function("performance.getEntriesByName('first-contentful-paint').length > 0")
        timings[name] = round(
            page.evaluate("performance.getEntriesByName('first-contentful-paint')[0].startTime"), 1
        )
        context.close()
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "first-paint.json").write_text(json.dumps(timings, indent=2) + "\n")
    print("first contentful paint (ms, cold cache):", timings)
    assert all(t > 0 for t in timings.values())


def test_auth_none_on_loopback_skips_sign_in(browser, tmp_path):
    server = start_server(tmp_path, "--auth", "none")
    try:
        context = browser.new_context()
        page = context.new_page()
        page.goto(f"{server.url}/console/")
        sync_api.expect(page.get_by_role("heading", name="Playground")).to_be_visible()
        assert page.get_by_test_id("signin").count() == 0
        context.close()
    finally:
        stop_server(server)


def test_one_time_link_signs_in_once(browser, live):
    server, _ = live
    link = re.search(r"(http://\S+/console/login\?token=\S+)", server.log.read_text()).group(1)
    context = browser.new_context()
    page = context.new_page()
    page.goto(link)
    sync_api.expect(page.get_by_role("heading", name="Playground")).to_be_visible()
    context.close()
    context = browser.new_context()
    page = context.new_page()
    page.goto(link)
    sync_api.expect(page.get_by_test_id("signin")).to_contain_text("already used or has expired")
    context.close()


def test_pages_fit_a_phone_screen_without_sideways_scrolling(browser, live):
    server, _ = live
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    sign_in(page, server.url)
    sync_api.expect(page.get_by_test_id("model-0")).to_be_visible()
    widths = {}
    for name in PAGES:
        page.goto(f"{server.url}/console/#/{name}")
        page.wait_for_timeout(500)
        widths[name] = page.evaluate("document.documentElement.scrollWidth")
    page.goto(f"{server.url}/console/#/playground")
    page.wait_for_timeout(500)
    shot(page, "phone-playground")
    context.close()
    assert all(w <= 392 for w in widths.values()), widths


def test_retrieve_tester_ranks_chunks_with_scores_and_sources(page, live):
    server, _ = live
    agent = server.client("bedrock-agent")
    kb = agent.create_knowledge_base(
        name="console-kb", roleArn="arn:aws:iam::000000000000:role/outcrop-test",
        knowledgeBaseConfiguration={
            "type": "VECTOR",
            "vectorKnowledgeBaseConfiguration": {
                "embeddingModelArn": f"arn:aws:bedrock:{REGION}::foundation-model/{EMBED}"
            },
        },
        storageConfiguration={
            "type": "OPENSEARCH_SERVERLESS",
            "opensearchServerlessConfiguration": {
                "collectionArn": "arn:aws:aoss:us-east-1:000000000000:collection/abc",
                "vectorIndexName": "idx",
                "fieldMapping": {"vectorField": "v", "textField": "t", "metadataField": "m"},
            },
        },
    )["knowledgeBase"]  # fmt: skip
    kb_id = kb["knowledgeBaseId"]
    deadline = time.monotonic() + 60
    while agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]["status"] != "ACTIVE":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    ds_id = agent.create_data_source(
        knowledgeBaseId=kb_id, name="direct", dataSourceConfiguration={"type": "CUSTOM"},
    )["dataSource"]["dataSourceId"]  # fmt: skip
    texts = {
        "remote": "Employees may work remotely on Fridays.",
        "coffee": "The office coffee machine is descaled monthly.",
        "xss": '<img src=x onerror="window.__xss=1"> Parking is free after six.',
    }
    agent.ingest_knowledge_base_documents(
        knowledgeBaseId=kb_id, dataSourceId=ds_id,
        documents=[
            {"content": {"dataSourceType": "CUSTOM", "custom": {
                "customDocumentIdentifier": {"id": key}, "sourceType": "IN_LINE",
                "inlineContent": {"type": "TEXT", "textContent": {"data": text}}}}}
            for key, text in texts.items()
        ],
    )  # fmt: skip
    sign_in(page, server.url, hash_="#/knowledge")
    page.get_by_test_id("kb").select_option(kb_id)
    page.get_by_test_id("kb-query").fill("Can I work from home?")
    page.get_by_role("button", name="Retrieve").click()
    results = page.get_by_test_id("kb-results").locator("li")
    sync_api.expect(results).to_have_count(3)
    sync_api.expect(results.first).to_contain_text(texts["remote"])
    sync_api.expect(results.first).to_contain_text(re.compile(r"score \d\.\d{4} · document remote"))
    sync_api.expect(page.get_by_test_id("kb-results")).to_contain_text(texts["xss"])
    assert page.evaluate("window.__xss") is None and page.locator("main img").count() == 0
    shot(page, "knowledge")
