"""bedrock-agent-runtime: Retrieve, RetrieveAndGenerate(Stream), with no HTTP in sight.

Retrieve embeds the query with the knowledge base's model and searches its store
(:func:`outcrop.knowledge.retrieval.retrieve`). RetrieveAndGenerate puts the results in the
prompt template (``$search_results$``, ``$query$``, ``$output_format_instructions$``),
generates with any served text model, and cites: the answer is cut into sentences, and
each sentence lists the retrieved passages it is closest to (cosine similarity of their
embeddings, above ``CITE_THRESHOLD``). A citation's span is inclusive on both ends, as
Bedrock's: ``output[start:end + 1] == part.text``.

Sessions (``sessionId``) keep the conversation's turns in memory, newest ``MAX_SESSIONS``.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from outcrop.errors import ValidationError
from outcrop.knowledge.records import KnowledgeBaseRecord
from outcrop.knowledge.retrieval import retrieve
from outcrop.knowledge.store import Hit
from outcrop.service.fields import Obj
from outcrop.service.kb_config import parse_filter
from outcrop.service.knowledge import KnowledgeService
from outcrop.service.runtime import Prepared, RuntimeService
from outcrop.service.types import ChatRequest, Message, SamplingParams, StreamEnd, TextDelta

DEFAULT_RESULTS = 5
MAX_SESSIONS = 1000
CITE_THRESHOLD = 0.45
MAX_REFERENCES = 3
SESSION_ID = re.compile(r"[0-9a-zA-Z._:-]{2,100}")

DEFAULT_TEMPLATE = (
    "You are a question answering agent. I will provide you with a set of search results. "
    "The user will provide you with a question. Your job is to answer the user's question "
    "using only information from the search results. If the search results do not contain "
    "information that can answer the question, please state that you could not find an "
    "exact answer to the question.\n\n"
    "Here are the search results in numbered order:\n$search_results$\n\n"
    "$output_format_instructions$"
)
FORMAT_INSTRUCTIONS = "Answer in a few sentences, using only the search results."
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)|\n+")


@dataclass
class RagPlan:
    """A RetrieveAndGenerate request, retrieved and admitted to the text model's queue."""

    session_id: str
    question: str
    kb: KnowledgeBaseRecord
    hits: list[Hit]
    prepared: Prepared


def location(hit: Hit) -> dict[str, Any]:
    if hit.location_type == "S3":
        return {"type": "S3", "s3Location": {"uri": hit.source_uri}}
    return {"type": "CUSTOM", "customDocumentLocation": {"id": hit.doc_key}}


def reference(hit: Hit) -> dict[str, Any]:
    return {
        "content": {"type": "TEXT", "text": hit.text},
        "location": location(hit),
        "metadata": hit.metadata,
    }


class KnowledgeRuntime:
    def __init__(self, knowledge: KnowledgeService, runtime: RuntimeService) -> None:
        self.knowledge = knowledge
        self.runtime = runtime
        self.sessions: OrderedDict[str, list[tuple[str, str]]] = OrderedDict()

    # ------------------------------------------------------------------ Retrieve

    async def _search(self, kb: KnowledgeBaseRecord, text: str, config: Obj | None) -> list[Hit]:
        k, hybrid, where = DEFAULT_RESULTS, False, None
        vector_config = config.obj("vectorSearchConfiguration", required=True) if config else None
        if vector_config is not None:
            k = vector_config.integer("numberOfResults", minimum=1, maximum=100) or k
            search = vector_config.string("overrideSearchType", choices=("HYBRID", "SEMANTIC"))
            hybrid = search == "HYBRID"
            for unsupported in ("rerankingConfiguration", "implicitFilterConfiguration"):
                if vector_config.has(unsupported):
                    raise vector_config.fail(
                        unsupported, "is not supported by outcrop (no reranking model here)"
                    )
            f = vector_config.obj("filter")
            where = parse_filter(f) if f is not None else None
        store = await asyncio.to_thread(self.knowledge.stores.store, kb)
        embedder = await self.knowledge.stores.embedder(kb)
        vector = (await embedder.embed([text]))[0]
        return await asyncio.to_thread(retrieve, store, vector, text, k, hybrid=hybrid, where=where)

    async def retrieve(self, kb_identifier: str, body: dict[str, Any]) -> dict[str, Any]:
        kb = await asyncio.to_thread(self.knowledge.active_knowledge_base, kb_identifier)
        o = Obj.of(body, (), "converse")
        _no_guardrail(o)
        query = o.obj("retrievalQuery", required=True)
        assert query is not None
        if query.string("type", choices=("TEXT", "IMAGE")) == "IMAGE" or query.has("image"):
            raise query.fail("type", "IMAGE queries are not supported; send text")
        text = _text(query, "text", 20000)
        hits = await self._search(kb, text, o.obj("retrievalConfiguration"))
        return {
            "retrievalResults": [{**reference(h), "score": h.score} for h in hits],
        }

    # ------------------------------------------------------------------ RetrieveAndGenerate

    async def plan(self, body: dict[str, Any]) -> RagPlan:
        """Validate, retrieve and start generating; every error happens here, before a
        stream starts."""
        o = Obj.of(body, (), "converse")
        question = _text(o.obj("input", required=True), "text", 1000)
        config = o.obj("retrieveAndGenerateConfiguration", required=True)
        assert config is not None
        kind = config.string("type", required=True, choices=("KNOWLEDGE_BASE", "EXTERNAL_SOURCES"))
        if kind != "KNOWLEDGE_BASE":
            raise config.fail("type", "EXTERNAL_SOURCES is not supported; use KNOWLEDGE_BASE")
        kbc = config.obj("knowledgeBaseConfiguration", required=True)
        assert kbc is not None
        kb_id = kbc.string("knowledgeBaseId", required=True) or ""
        if not re.fullmatch(r"[0-9a-zA-Z]{1,10}", kb_id):
            raise kbc.fail(
                "knowledgeBaseId",
                "Member must satisfy regular expression pattern: ^[0-9a-zA-Z]+$ (at most 10 characters)",
            )
        model = kbc.string("modelArn", required=True) or ""
        if kbc.has("orchestrationConfiguration"):
            raise kbc.fail("orchestrationConfiguration", "is not supported by outcrop")
        session_id = o.string("sessionId")
        history: list[tuple[str, str]] = []
        if session_id is not None:
            if not SESSION_ID.fullmatch(session_id):
                raise o.fail(
                    "sessionId",
                    "Member must satisfy regular expression pattern: ^[0-9a-zA-Z._:-]+$",
                )
            if session_id not in self.sessions:
                raise ValidationError(f"Session with Id {session_id} is not valid or has expired.")
            history = self.sessions[session_id]
        else:
            session_id = str(uuid.uuid4())
        template, sampling = _generation(kbc.obj("generationConfiguration"))
        kb = await asyncio.to_thread(self.knowledge.active_knowledge_base, kb_id)
        hits = await self._search(kb, question, kbc.obj("retrievalConfiguration"))
        system = _fill(template, hits, question)
        messages = []
        for asked, answered in history:
            messages += [Message("user", asked), Message("assistant", answered)]
        messages.append(Message("user", question))
        request = ChatRequest(messages=messages, system=system, sampling=sampling)
        prepared = await self.runtime.prepare(model, request)
        return RagPlan(session_id, question, kb, hits, prepared)

    async def stream(self, plan: RagPlan) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """``("output", {...})`` deltas, then one ``("citation", {...})`` per sentence."""
        parts: list[str] = []
        async for event in self.runtime.stream(plan.prepared):
            if isinstance(event, TextDelta):
                parts.append(event.text)
                yield "output", {"text": event.text}
            elif isinstance(event, StreamEnd):
                break
        text = "".join(parts)
        self._remember(plan, text.strip())
        for citation in await self.citations(plan, text):
            yield "citation", {**citation, "citation": citation}

    async def retrieve_and_generate(self, body: dict[str, Any]) -> dict[str, Any]:
        plan = await self.plan(body)
        result = await self.runtime.complete(plan.prepared)
        text = result.text
        self._remember(plan, text)
        return {
            "sessionId": plan.session_id,
            "output": {"text": text},
            "citations": await self.citations(plan, text),
        }

    def _remember(self, plan: RagPlan, answer: str) -> None:
        turns = self.sessions.pop(plan.session_id, [])
        turns.append((plan.question, answer))
        self.sessions[plan.session_id] = turns[-20:]
        while len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)

    async def citations(self, plan: RagPlan, text: str) -> list[dict[str, Any]]:
        spans = sentence_spans(text)
        if not spans:
            return []
        refs: list[list[int]] = [[] for _ in spans]
        if plan.hits:
            embedder = await self.knowledge.stores.embedder(plan.kb)
            texts = [text[s:e] for s, e in spans] + [h.text for h in plan.hits]
            v = await embedder.embed(texts)
            sims = v[: len(spans)] @ v[len(spans) :].T
            for i, row in enumerate(sims):
                order = np.argsort(-row)[:MAX_REFERENCES]
                refs[i] = [int(j) for j in order if row[j] >= CITE_THRESHOLD]
        out = []
        for (s, e), picked in zip(spans, refs, strict=True):
            out.append(
                {
                    "generatedResponsePart": {
                        "textResponsePart": {"text": text[s:e], "span": {"start": s, "end": e - 1}}
                    },
                    "retrievedReferences": [reference(plan.hits[j]) for j in picked],
                }
            )
        return out


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``[start, end)`` of each sentence, whitespace trimmed; a piece under three words
    ("W." of an initial, "Yes.") joins the sentence before it."""
    spans: list[tuple[int, int]] = []
    for m in _SENTENCE.finditer(text):
        piece = m.group()
        if not piece.strip():
            continue
        start = m.start() + len(piece) - len(piece.lstrip())
        end = m.end() - (len(piece) - len(piece.rstrip()))
        if spans and len(text[start:end].split()) < 3:
            spans[-1] = (spans[-1][0], end)
        else:
            spans.append((start, end))
    return spans


def _no_guardrail(o: Obj) -> None:
    if o.has("guardrailConfiguration"):
        raise o.fail("guardrailConfiguration", "guardrails are not supported by outcrop")


def _text(o: Obj | None, key: str, limit: int) -> str:
    assert o is not None
    text = o.string(key, required=True) or ""
    if len(text) > limit:
        raise o.fail(key, f"Member must have length less than or equal to {limit}")
    if not text.strip():
        raise o.fail(key, "must not be blank")
    return text


def _generation(g: Obj | None) -> tuple[str, SamplingParams]:
    sampling = SamplingParams()
    template = DEFAULT_TEMPLATE
    if g is None:
        return template, sampling
    _no_guardrail(g)
    prompt = g.obj("promptTemplate")
    if prompt is not None and prompt.has("textPromptTemplate"):
        template = prompt.string("textPromptTemplate") or ""
        if not 1 <= len(template) <= 4000:
            raise prompt.fail("textPromptTemplate", "Member must have length between 1 and 4000")
    inference = g.obj("inferenceConfig")
    text = inference.obj("textInferenceConfig") if inference else None
    if text is not None:
        max_tokens = text.integer("maxTokens", minimum=0, maximum=65536)
        sampling.max_tokens = max_tokens or None
        sampling.temperature = text.number("temperature", minimum=0, maximum=1)
        sampling.top_p = text.number("topP", minimum=0, maximum=1)
        stops = text.strings("stopSequences")
        if len(stops) > 4:
            raise text.fail("stopSequences", "Member must have length less than or equal to 4")
        sampling.stop = stops
    return template, sampling


def _fill(template: str, hits: list[Hit], question: str) -> str:
    results = "\n".join(f"[{i}] {h.text}" for i, h in enumerate(hits, start=1)) or "(none)"
    return (
        template.replace("$search_results$", results)
        .replace("$query$", question)
        .replace("$output_format_instructions$", FORMAT_INSTRUCTIONS)
    )
