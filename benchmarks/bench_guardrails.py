"""Guardrail latency: what evaluating every policy adds to a request, measured side by side.

Starts a real ``outcrop serve`` (instant engine: no model time, so only the guardrail's
cost remains in the difference) and drives it with boto3, interleaving the arms request
by request so both see the same machine load:

* ApplyGuardrail on a 1,000-character text with a guardrail that has every policy (3 denied
  topics, all 6 content filters at HIGH, 50 custom words + PROFANITY, all 31 PII types plus
  3 regexes; on OUTPUT also GROUNDING + RELEVANCE against a 1,000-character source) vs the
  same request to a guardrail with no policies;
* Converse with that guardrail in ``guardrailConfig`` (input and output checked) vs the
  same Converse without a guardrail.

Prints p50/p90 per arm, the added p50 and the ratio; ``--markdown`` appends a section to
docs/benchmarks.md.

    PYTHONPATH=src python benchmarks/bench_guardrails.py --requests 200
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import SMOL, models_data_dir, start_server, stop_server  # noqa: E402

TEXT = (
    "Hello, my name is John Smith and I live at 1600 Pennsylvania Avenue NW, Washington, "
    "DC 20500. Please update my billing details: my card is 4111 1111 1111 1111, expiry "
    "12/27, and you can reach me at john.smith@example.com or (415) 555-2671. Yesterday I "
    "asked your support team about my order ORD-123456, which still has not arrived, and "
    "nobody answered. I would also like to know whether the premium plan includes priority "
    "shipping, how the refund policy works for damaged items, and whether I can change the "
    "delivery address after the order has shipped. My account number is 12345678 and I "
    "have been a customer for six years. The last package was left in the rain and the box "
    "was soaked through. Could you also confirm that my password reset went through? I "
    "tried twice from the mobile app and it said the link had expired. Thank you for your "
    "help, and I hope we can sort this out before the weekend, because I am travelling on "
    "Monday and will not be home to receive the parcel."
)[:1000]
SOURCE = (TEXT.replace("John Smith", "the customer") + " " * 10)[:1000]


def all_policies() -> dict:
    from outcrop.guardrails.policies import CONTENT_TYPES, PII_TYPES

    return {
        "topicPolicyConfig": {
            "topicsConfig": [
                {"name": "Investment advice", "definition": "Recommendations about which stocks, funds or cryptocurrencies to buy or sell.", "examples": ["Should I buy Tesla stock now?"], "type": "DENY"},
                {"name": "Medical diagnosis", "definition": "Telling someone which illness they have or which medication to take.", "examples": ["What medication should I take for my rash?"], "type": "DENY"},
                {"name": "Politics", "definition": "Opinions about political parties, candidates or how to vote.", "examples": ["Who should I vote for?"], "type": "DENY"},
            ]
        },
        "contentPolicyConfig": {
            "filtersConfig": [
                {"type": t, "inputStrength": "HIGH", "outputStrength": "NONE" if t == "PROMPT_ATTACK" else "HIGH"}
                for t in CONTENT_TYPES
            ]
        },
        "wordPolicyConfig": {
            "wordsConfig": [{"text": f"forbiddenword{i}"} for i in range(50)],
            "managedWordListsConfig": [{"type": "PROFANITY"}],
        },
        "sensitiveInformationPolicyConfig": {
            "piiEntitiesConfig": [{"type": t, "action": "ANONYMIZE"} for t in PII_TYPES],
            "regexesConfig": [
                {"name": "ORDER", "pattern": r"ORD-\d{6}", "action": "ANONYMIZE"},
                {"name": "TICKET", "pattern": r"TCK-[A-Z]{3}\d{4}", "action": "ANONYMIZE"},
                {"name": "SKU", "pattern": r"\bSKU\d{8}\b", "action": "ANONYMIZE"},
            ],
        },
        "contextualGroundingPolicyConfig": {
            "filtersConfig": [{"type": "GROUNDING", "threshold": 0.1}, {"type": "RELEVANCE", "threshold": 0.1}]
        },
    }  # fmt: skip


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return (time.perf_counter() - started) * 1000


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200, help="measured requests per arm")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--markdown", action="store_true", help="append results to docs/benchmarks.md")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="outcrop-guard-bench-"))
    data = tmp / "data"
    data.mkdir()
    shared = models_data_dir()
    (shared / "cache").mkdir(exist_ok=True)
    (data / "models").symlink_to(shared / "models", target_is_directory=True)
    (data / "cache").symlink_to(shared / "cache", target_is_directory=True)
    server = start_server(
        tmp, "--data-dir", str(data), env_extra={"OUTCROP_BENCH_INSTANT_ENGINE": "1"}
    )
    try:
        return run(server, args)
    finally:
        stop_server(server)
        shutil.rmtree(tmp, ignore_errors=True)


def run(server, args) -> int:
    bedrock, runtime = server.client("bedrock"), server.client("bedrock-runtime")
    msgs = {"blockedInputMessaging": "blocked", "blockedOutputsMessaging": "blocked"}
    full = bedrock.create_guardrail(name="bench-all", **msgs, **all_policies())["guardrailId"]
    empty = bedrock.create_guardrail(name="bench-none", **msgs)["guardrailId"]
    inp = [{"text": {"text": TEXT, "qualifiers": ["guard_content"]}}]
    out = [
        {"text": {"text": SOURCE, "qualifiers": ["grounding_source"]}},
        {"text": {"text": "Where is my order and how do refunds work?", "qualifiers": ["query"]}},
        {"text": {"text": TEXT}},
    ]

    def apply(gid, source, content):
        return lambda: runtime.apply_guardrail(
            guardrailIdentifier=gid, guardrailVersion="DRAFT", source=source, content=content
        )

    def converse(gid):
        config = {"guardrailIdentifier": gid, "guardrailVersion": "DRAFT"} if gid else None
        kwargs = {"guardrailConfig": config} if config else {}
        return lambda: runtime.converse(
            modelId=SMOL,
            messages=[{"role": "user", "content": [{"text": TEXT}]}],
            inferenceConfig={"maxTokens": 4},
            **kwargs,
        )

    pairs = {
        "ApplyGuardrail INPUT (all input policies)": (apply(full, "INPUT", inp), apply(empty, "INPUT", inp)),
        "ApplyGuardrail OUTPUT (all output policies + grounding)": (apply(full, "OUTPUT", out), apply(empty, "OUTPUT", out)),
        "Converse + guardrailConfig (input and output checked)": (converse(full), converse(None)),
    }  # fmt: skip
    first = timed(pairs["ApplyGuardrail INPUT (all input policies)"][0])  # distils/loads vectors
    rows = []
    for label, (guarded, plain) in pairs.items():
        for _ in range(args.warmup):
            guarded()
            plain()
        a, b = [], []
        for _ in range(args.requests):
            a.append(timed(guarded))
            b.append(timed(plain))
        rows.append((label, a, b))

    lines = [
        f"### Guardrails: added latency ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
        "",
        f"`benchmarks/bench_guardrails.py --requests {args.requests}`: one boto3 client, arms "
        "interleaved request by request, instant engine (no model time); text 1,000 "
        f"characters; first guarded request (loads the static vectors) {first:.0f} ms. "
        f"{os.cpu_count()} cores, shared with other work while it ran: absolute numbers "
        "are indicative, the difference is measured side by side.",
        "",
        "| request | p50 with guardrail | p50 without | added p50 | ratio | p90 with | p90 without |",
        "|---|---|---|---|---|---|---|",
    ]
    for label, a, b in rows:
        pa, pb = statistics.median(a), statistics.median(b)
        lines.append(
            f"| {label} | {pa:.1f} ms | {pb:.1f} ms | **{pa - pb:+.1f} ms** | {pa / pb:.2f}x "
            f"| {pct(a, 90):.1f} ms | {pct(b, 90):.1f} ms |"
        )
    report = "\n".join(lines) + "\n"
    print(report)
    if args.markdown:
        with (ROOT / "docs" / "benchmarks.md").open("a") as fh:
            fh.write("\n" + report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
