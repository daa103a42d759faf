"""Precision and recall of the guardrail policies on the project's labeled sets.

Runs the server's own :func:`outcrop.guardrails.evaluate.evaluate` (same vectors, same
thresholds) over tests/data/guardrails/*:

* content filters: ``content_eval.tsv`` (held out: the classifier trains on
  ``src/outcrop/guardrails/data/content_train.tsv``), per category and strength;
  positives are the category's sentences, everything else (benign near-misses and the
  other categories) counts as negative;
* denied topics: ``topics_eval.json`` (the set the thresholds were calibrated on);
* contextual grounding: ``grounding_eval.json`` at threshold 0.5;
* PII: ``pii_eval.tsv``, per type, positives and near-misses.

``--full-model`` adds the content scores the full MiniLM transformer would give (not what
is served: too slow for a guardrail's budget; see docs/guardrails.md).

    PYTHONPATH=src python benchmarks/guardrail_quality.py [--full-model]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "guardrails"
sys.path.insert(0, str(ROOT))

from outcrop.guardrails import content  # noqa: E402
from outcrop.guardrails.evaluate import Block, Guardrail, evaluate  # noqa: E402
from outcrop.guardrails.policies import (  # noqa: E402
    PII_TYPES,
    ContentFilter,
    GroundingFilter,
    PiiEntity,
    Policies,
    Topic,
)
from outcrop.guardrails.static import load_or_distill  # noqa: E402
from outcrop.guardrails.vectors import PolicyVectors  # noqa: E402
from tests.conftest import models_data_dir  # noqa: E402


def model_dir() -> Path:
    base = models_data_dir() / "models" / "sentence-transformers.all-minilm-l6-v2-v1_0"
    return next(p for p in base.iterdir() if p.is_dir())


def guardrail(policies: Policies) -> Guardrail:
    return Guardrail("eval", "DRAFT", "arn:eval", "in", "out", policies, key=str(id(policies)))


def pr(tp: int, fp: int, fn: int) -> str:
    p = tp / (tp + fp) if tp + fp else float("nan")
    r = tp / (tp + fn) if tp + fn else float("nan")
    return f"{p:.2f} | {r:.2f}"


async def content_table(vectors: PolicyVectors) -> list[str]:
    rows = content.parse_tsv((DATA / "content_eval.tsv").read_text())
    lines = [
        "| filter | n+ / n- | LOW strength P / R | MEDIUM P / R | HIGH P / R |",
        "|---|---|---|---|---|",
    ]
    found: dict[str, dict[str, list[bool]]] = {}
    for strength in ("LOW", "MEDIUM", "HIGH"):
        filters = [
            ContentFilter(
                type=t,
                input_strength=strength,
                output_strength="NONE" if t == "PROMPT_ATTACK" else strength,
            )
            for t in content.CATEGORIES
        ]
        g = guardrail(Policies(content_filters=filters))
        for _, text in rows:
            a = await evaluate(g, [Block(text, frozenset({"guard_content"}))], "INPUT", vectors)
            hits = {f.type for f in a.content if f.detected}
            for t in content.CATEGORIES:
                found.setdefault(t, {}).setdefault(strength, []).append(t in hits)
    for t in content.CATEGORIES:
        truth = [label == t for label, _ in rows]
        cells = []
        for strength in ("LOW", "MEDIUM", "HIGH"):
            pred = found[t][strength]
            tp = sum(p and y for p, y in zip(pred, truth, strict=True))
            fp = sum(p and not y for p, y in zip(pred, truth, strict=True))
            fn = sum(y and not p for p, y in zip(pred, truth, strict=True))
            cells.append(pr(tp, fp, fn).replace(" | ", " / "))
        lines.append(
            f"| {t} | {sum(truth)} / {len(truth) - sum(truth)} | " + " | ".join(cells) + " |"
        )
    return lines


async def topics_table(vectors: PolicyVectors, part: str = "sentences") -> list[str]:
    data = json.loads((DATA / "topics_eval.json").read_text())
    topics = [
        Topic(name=t["name"], definition=t["definition"], examples=t["examples"])
        for t in data["topics"]
    ]
    g = guardrail(Policies(topics=topics))
    lines = ["| topic | positives | P | R |", "|---|---|---|---|"]
    total = [0, 0, 0]
    results = []
    for text, label in data[part]:
        a = await evaluate(g, [Block(text)], "INPUT", vectors)
        results.append(({t.name for t in a.topics if t.detected}, label))
    for t in topics:
        tp = sum(t.name in hits and label == t.name for hits, label in results)
        fp = sum(t.name in hits and label != t.name for hits, label in results)
        fn = sum(t.name not in hits and label == t.name for hits, label in results)
        total = [total[0] + tp, total[1] + fp, total[2] + fn]
        lines.append(f"| {t.name} | {tp + fn} | {pr(tp, fp, fn)} |")
    lines.append(f"| all (pooled) | {total[0] + total[2]} | {pr(*total)} |")
    return lines


async def grounding_table(vectors: PolicyVectors) -> list[str]:
    data = json.loads((DATA / "grounding_eval.json").read_text())
    filters = [GroundingFilter("GROUNDING", 0.5), GroundingFilter("RELEVANCE", 0.5)]
    g = guardrail(Policies(grounding_filters=filters))
    counts = {"GROUNDING": [0, 0, 0], "RELEVANCE": [0, 0, 0]}
    for case in data["cases"]:
        for answer, grounded, relevant in case["answers"]:
            blocks = [
                Block(case["source"], frozenset({"grounding_source"})),
                Block(case["query"], frozenset({"query"})),
                Block(answer),
            ]
            a = await evaluate(g, blocks, "OUTPUT", vectors)
            flagged = {f.type for f in a.grounding if f.detected}
            for kind, good in (("GROUNDING", grounded), ("RELEVANCE", relevant)):
                bad, hit = not good, kind in flagged
                c = counts[kind]
                c[0] += hit and bad
                c[1] += hit and not bad
                c[2] += bad and not hit
    lines = ["| filter (threshold 0.5) | what counts as positive | P | R |", "|---|---|---|---|"]
    lines.append(
        f"| GROUNDING | an answer with an unsupported claim | {pr(*counts['GROUNDING'])} |"
    )
    lines.append(
        f"| RELEVANCE | an answer that does not address the query | {pr(*counts['RELEVANCE'])} |"
    )
    return lines


async def pii_table(vectors: PolicyVectors) -> list[str]:
    rows = [
        line.split("\t")
        for line in (DATA / "pii_eval.tsv").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    g = guardrail(Policies(pii_entities=[PiiEntity(type=t, action="ANONYMIZE") for t in PII_TYPES]))
    stats: dict[str, list[int]] = {}
    for kind, text, expected in rows:
        a = await evaluate(g, [Block(text)], "INPUT", vectors)
        matches = [f.match for f in a.pii if f.type == kind]
        s = stats.setdefault(
            kind, [0, 0, 0, 0]
        )  # positives found, positives, near-misses passed, near-misses
        if expected == "-":
            s[3] += 1
            s[2] += not matches
        else:
            s[1] += 1
            s[0] += expected in matches
    lines = ["| type | positives found | near-misses passed |", "|---|---|---|"]
    for kind in sorted(stats):
        s = stats[kind]
        near = f"{s[2]}/{s[3]}" if s[3] else "-"
        lines.append(f"| {kind} | {s[0]}/{s[1]} | {near} |")
    return lines


def full_model_content() -> list[str]:
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir()), device="cpu")
    train = content.labeled()
    test = content.parse_tsv((DATA / "content_eval.tsv").read_text())
    clf = content.train(
        model.encode([t for _, t in train], normalize_embeddings=True), [lb for lb, _ in train]
    )
    probs = clf.probabilities(model.encode([t for _, t in test], normalize_embeddings=True))
    lines = ["| filter | LOW P / R | MEDIUM P / R | HIGH P / R |", "|---|---|---|---|"]
    for k, t in enumerate(content.CATEGORIES):
        truth = np.array([label == t for label, _ in test])
        cells = []
        for strength in ("LOW", "MEDIUM", "HIGH"):
            pred = np.array([content.blocks(strength, content.confidence(p)) for p in probs[:, k]])
            tp, fp, fn = (
                int((pred & truth).sum()),
                int((pred & ~truth).sum()),
                int((~pred & truth).sum()),
            )
            cells.append(pr(tp, fp, fn).replace(" | ", " / "))
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return lines


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--full-model", action="store_true")
    args = ap.parse_args()
    embedder = load_or_distill(model_dir(), models_data_dir() / "cache" / "guardrails")

    async def embed(texts: list[str]) -> np.ndarray:
        return embedder.embed(texts)

    vectors = PolicyVectors(embed)
    sections = [
        ("Content filters (held-out set, served static vectors)", await content_table(vectors)),
        ("Denied topics (calibration half)", await topics_table(vectors)),
        ("Denied topics (held-out half)", await topics_table(vectors, "held_out")),
        ("Contextual grounding", await grounding_table(vectors)),
        ("Sensitive information (per type)", await pii_table(vectors)),
    ]
    if args.full_model:
        sections.append(
            ("Content filters with the full MiniLM transformer (not served)", full_model_content())
        )
    for title, lines in sections:
        print(f"#### {title}\n")
        print("\n".join(lines) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
