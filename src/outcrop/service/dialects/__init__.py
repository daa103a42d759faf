"""Model-family dialects for InvokeModel bodies, and the model-ID → dialect dispatch.

``dialect_for`` returns a *fresh* instance per call: families that accept two body
formats (Anthropic messages/legacy, Mistral prompt/chat, local chat/completion) remember
in ``parse`` which one arrived so the response answers in kind.
"""

from __future__ import annotations

from collections.abc import Callable

from outcrop.models.resolve import base_model_id
from outcrop.service.dialects.ai21 import JambaDialect, JurassicDialect
from outcrop.service.dialects.anthropic import AnthropicDialect
from outcrop.service.dialects.base import Dialect, InvokeContext
from outcrop.service.dialects.cohere import CohereChatDialect, CohereCommandDialect
from outcrop.service.dialects.llama import LlamaDialect
from outcrop.service.dialects.local import LocalDialect
from outcrop.service.dialects.mistral import MistralDialect
from outcrop.service.dialects.nova import NovaDialect
from outcrop.service.dialects.titan import TitanDialect

# First match wins, so the more specific prefixes come first.
_ROUTES: tuple[tuple[str, Callable[[], Dialect]], ...] = (
    ("anthropic.", AnthropicDialect),
    ("amazon.titan-text", TitanDialect),
    ("amazon.titan-tg1", TitanDialect),
    ("amazon.nova", NovaDialect),
    ("meta.", LlamaDialect),
    ("mistral.", MistralDialect),
    ("cohere.command-r", CohereChatDialect),
    ("cohere.command", CohereCommandDialect),
    ("ai21.j2", JurassicDialect),
    ("ai21.", JambaDialect),
)


def dialect_for(model_id: str) -> Dialect:
    model = base_model_id(model_id).lower()
    for prefix, factory in _ROUTES:
        if model.startswith(prefix):
            return factory()
    return LocalDialect()


__all__ = [
    "AnthropicDialect",
    "CohereChatDialect",
    "CohereCommandDialect",
    "Dialect",
    "InvokeContext",
    "JambaDialect",
    "JurassicDialect",
    "LlamaDialect",
    "LocalDialect",
    "MistralDialect",
    "NovaDialect",
    "TitanDialect",
    "dialect_for",
]
