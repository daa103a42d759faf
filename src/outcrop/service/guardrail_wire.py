"""Guardrail verdicts in Bedrock's runtime shapes: GuardrailAssessment, usage, coverage,
ApplyGuardrail's response, and the Converse / InvokeModel traces.

Name traps kept straight here (and only here): configs say ``BLOCK``, assessments say
``BLOCKED``; ApplyGuardrail says ``GUARDRAIL_INTERVENED``, Converse's stopReason says
``guardrail_intervened`` and InvokeModel's body says ``INTERVENED``; Converse's ``trace``
is lower case (``enabled``), InvokeModel's ``X-Amzn-Bedrock-Trace`` upper case.
"""

from __future__ import annotations

from typing import Any

from outcrop.guardrails.evaluate import Guardrail
from outcrop.guardrails.findings import Assessment


def usage(a: Assessment) -> dict[str, int]:
    u = a.units
    return {
        "topicPolicyUnits": u.get("topic", 0),
        "contentPolicyUnits": u.get("content", 0),
        "wordPolicyUnits": u.get("word", 0),
        "sensitiveInformationPolicyUnits": u.get("sensitive", 0),
        "sensitiveInformationPolicyFreeUnits": u.get("sensitive_free", 0),
        "contextualGroundingPolicyUnits": u.get("grounding", 0),
    }


def add_usage(total: dict[str, int], more: dict[str, int]) -> dict[str, int]:
    return {k: total.get(k, 0) + v for k, v in more.items()}


def coverage(a: Assessment, images_total: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"textCharacters": {"guarded": a.guarded_chars, "total": a.total_chars}}
    if images_total:
        out["images"] = {"guarded": 0, "total": images_total}
    return out


def assessment(
    a: Assessment, g: Guardrail, *, full: bool = False, images_total: int = 0
) -> dict[str, Any]:
    """One ``GuardrailAssessment``: the policies that found something (all under FULL)."""
    p = g.policies
    out: dict[str, Any] = {}
    if a.topics or (full and p.topics):
        out["topicPolicy"] = {
            "topics": [
                {"name": t.name, "type": "DENY", "action": t.action, "detected": t.detected}
                for t in a.topics
            ]
        }
    if a.content or (full and p.content_filters):
        out["contentPolicy"] = {
            "filters": [
                {
                    "type": c.type,
                    "confidence": c.confidence,
                    "filterStrength": c.strength,
                    "action": c.action,
                    "detected": c.detected,
                }
                for c in a.content
            ]
        }
    if a.words or (full and p.has_word_policy):
        out["wordPolicy"] = {
            "customWords": [
                {"match": w.match, "action": w.action, "detected": w.detected}
                for w in a.words
                if not w.managed
            ],
            "managedWordLists": [
                {"match": w.match, "type": "PROFANITY", "action": w.action, "detected": w.detected}
                for w in a.words
                if w.managed
            ],
        }
    if a.pii or a.regexes or (full and p.has_sensitive_policy):
        out["sensitiveInformationPolicy"] = {
            "piiEntities": [
                {"match": e.match, "type": e.type, "action": e.action, "detected": e.detected}
                for e in a.pii
            ],
            "regexes": [
                {
                    "name": r.name,
                    "match": r.match,
                    "regex": r.regex,
                    "action": r.action,
                    "detected": r.detected,
                }
                for r in a.regexes
            ],
        }
    if a.grounding:
        out["contextualGroundingPolicy"] = {
            "filters": [
                {
                    "type": f.type,
                    "threshold": f.threshold,
                    "score": f.score,
                    "action": f.action,
                    "detected": f.detected,
                }
                for f in a.grounding
            ]
        }
    out["invocationMetrics"] = {
        "guardrailProcessingLatency": a.latency_ms,
        "usage": usage(a),
        "guardrailCoverage": coverage(a, images_total),
    }
    out["appliedGuardrailDetails"] = {
        "guardrailId": g.guardrail_id,
        "guardrailVersion": g.version,
        "guardrailArn": g.arn,
        "guardrailOrigin": ["REQUEST"],
        "guardrailOwnership": "SELF",
    }
    return out


def apply_response(
    a: Assessment, g: Guardrail, source: str, *, full: bool, images_total: int = 0
) -> dict[str, Any]:
    """ApplyGuardrail's response body."""
    if a.blocked:
        outputs = [{"text": g.blocked_message(source)}]  # type: ignore[arg-type]
    elif a.anonymized:
        outputs = [{"text": text} for text in a.outputs]
    else:
        outputs = []
    body: dict[str, Any] = {
        "usage": usage(a),
        "action": "GUARDRAIL_INTERVENED" if a.intervened else "NONE",
        "outputs": outputs,
        "assessments": [assessment(a, g, full=full, images_total=images_total)],
        "guardrailCoverage": coverage(a, images_total),
    }
    if a.intervened:
        body["actionReason"] = a.action_reason
    return body


def converse_trace(
    g: Guardrail,
    input_assessment: Assessment | None,
    output_assessments: list[Assessment],
    model_output: str | None,
    *,
    full: bool,
) -> dict[str, Any]:
    """``trace`` of a Converse response / ConverseStream metadata event."""
    guardrail: dict[str, Any] = {}
    if model_output is not None:
        guardrail["modelOutput"] = [model_output]
    if input_assessment is not None:
        guardrail["inputAssessment"] = {g.guardrail_id: assessment(input_assessment, g, full=full)}
    if output_assessments:
        guardrail["outputAssessments"] = {
            g.guardrail_id: [assessment(a, g, full=full) for a in output_assessments]
        }
    reasons = [a for a in [input_assessment, *output_assessments] if a and a.intervened]
    if reasons:
        guardrail["actionReason"] = reasons[0].action_reason
    return {"guardrail": guardrail}


def invoke_trace(
    g: Guardrail, input_assessment: Assessment | None, output_assessments: list[Assessment]
) -> dict[str, Any]:
    """``amazon-bedrock-trace`` of an InvokeModel body: ``{"guardrail": {"input", "outputs"}}``."""
    guardrail: dict[str, Any] = {}
    if input_assessment is not None:
        guardrail["input"] = {g.guardrail_id: assessment(input_assessment, g)}
    if output_assessments:
        guardrail["outputs"] = [{g.guardrail_id: assessment(a, g)} for a in output_assessments]
    return {"guardrail": guardrail}
