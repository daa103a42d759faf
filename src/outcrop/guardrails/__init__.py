"""Guardrails, evaluated locally: word filters, sensitive information, denied topics,
content filters and contextual grounding behind one :func:`~outcrop.guardrails.evaluate.evaluate`.

Nothing here speaks Bedrock's wire names; ``outcrop.service.guardrails`` does.
"""
