"""The knowledge package's pure parts: parsers, sidecars, chunking, filters, the store."""

from __future__ import annotations

import re

import numpy as np
import pytest

from outcrop.knowledge.chunking import (
    ChunkingConfig,
    chunk,
    semantic_chunks,
    semantic_groups,
    windows,
)
from outcrop.knowledge.filters import AllOf, AnyOf, Condition, matches
from outcrop.knowledge.index import VectorIndex
from outcrop.knowledge.metadata import parse_sidecar
from outcrop.knowledge.parsers import DocumentError, parse
from outcrop.knowledge.retrieval import fuse, retrieve
from outcrop.knowledge.store import ChunkStore, NewChunk
from tests.kb_docs import docx_bytes, pdf_bytes


class Words:
    """A tokenizer whose tokens are words (and punctuation), like a WordPiece without pieces."""

    def offsets(self, text: str) -> list[tuple[int, int]]:
        return [m.span() for m in re.finditer(r"\w+|[^\w\s]", text)]


# --------------------------------------------------------------------------- parsers


def test_each_file_type_yields_its_text():
    assert parse("a.txt", b"\xef\xbb\xbfplain text") == "plain text"
    html = parse("a.html", b"<title>T</title><p>One</p><script>x=1</script><p>Two</p>")
    assert "One" in html and "Two" in html and "x=1" not in html
    assert parse("a.csv", b"name,age\nAda,36\n") == "name: Ada; age: 36"
    assert "Hello PDF" in parse("a.pdf", pdf_bytes(["Hello PDF"]))
    assert parse("a.docx", docx_bytes(["Hello docx"])) == "Hello docx"


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("a.pdf", b"%PDF-1.4 garbage", "PDF"),
        ("a.docx", b"not a zip", "docx"),
        ("a.txt", b"\xff\xfe\x00bad", "UTF-8"),
        ("a.exe", b"MZ", "Unsupported"),
        ("a.txt", b"   \n ", "no text"),
    ],
)
def test_unreadable_documents_say_why(name, data, reason):
    with pytest.raises(DocumentError, match=reason):
        parse(name, data)


def test_sidecar_plain_and_typed_values():
    attrs = parse_sidecar(
        b'{"metadataAttributes": {"a": "x", "n": 3, "l": ["p", "q"], '
        b'"t": {"value": {"type": "NUMBER", "numberValue": 2.5}, "includeForEmbedding": true}}}'
    )
    assert attrs == {"a": "x", "n": 3, "l": ["p", "q"], "t": 2.5}
    with pytest.raises(DocumentError):
        parse_sidecar(b'{"metadataAttributes": {"a": {"nested": 1}}}')
    with pytest.raises(DocumentError):
        parse_sidecar(b"not json")


# --------------------------------------------------------------------------- chunking


def test_fixed_size_windows_respect_max_tokens_and_overlap():
    text = " ".join(f"w{i}" for i in range(100))
    chunks = chunk(
        text, ChunkingConfig("fixed_size", max_tokens=20, overlap_percentage=25), Words()
    )
    assert all(len(Words().offsets(c.text)) <= 20 for c in chunks)
    assert all(text[c.start : c.end] == c.text for c in chunks)
    first, second = chunks[0].text.split(), chunks[1].text.split()
    assert first[-5:] == second[:5]  # 25% of 20 tokens repeat
    assert chunks[-1].text.endswith("w99")


def test_windows_never_end_inside_a_word():
    # "abc" split into three tokens that touch: a window of 4 must not cut it.
    offsets = [(0, 1), (2, 3), (3, 4), (4, 5), (6, 7)]
    assert windows(offsets, 3, 0)[0] == (0, 1)


def test_hierarchical_children_carry_their_parent():
    text = " ".join(f"w{i}" for i in range(60))
    config = ChunkingConfig(
        "hierarchical", parent_max_tokens=30, child_max_tokens=10, overlap_tokens=2
    )
    chunks = chunk(text, config, Words())
    assert all(len(c.text.split()) <= 10 for c in chunks)
    assert all(c.parent is not None and c.text in c.parent for c in chunks)
    assert len({c.parent for c in chunks}) == 3  # 60 tokens / (30 - 2 overlap) -> 3 parents


def test_none_is_one_chunk():
    assert [c.text for c in chunk("a b c", ChunkingConfig("none"), Words())] == ["a b c"]


def test_semantic_cuts_where_the_topic_changes():
    text = "Cats purr. Cats nap. Cats hunt mice. Rockets launch. Rockets orbit. Rockets land."
    config = ChunkingConfig("semantic", max_tokens=100, buffer_size=0, breakpoint_percentile=50)
    spans, groups = semantic_groups(text, config)
    assert len(groups) == 6
    cat, rocket = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    vectors = np.array([cat, cat * 0.9 + rocket * 0.1, cat, rocket, rocket, rocket])
    chunks = semantic_chunks(text, spans, vectors, config, Words())
    assert [c.text for c in chunks] == [
        "Cats purr. Cats nap. Cats hunt mice.",
        "Rockets launch. Rockets orbit. Rockets land.",
    ]


def test_semantic_chunks_stay_under_max_tokens():
    text = "One two three four five six. Seven eight nine ten eleven twelve."
    config = ChunkingConfig("semantic", max_tokens=4, buffer_size=1, breakpoint_percentile=99)
    spans, groups = semantic_groups(text, config)
    chunks = semantic_chunks(text, spans, np.ones((len(groups), 3)), config, Words())
    assert all(len(Words().offsets(c.text)) <= 4 for c in chunks)
    assert (
        " ".join(c.text for c in chunks).replace(".", "").split() == text.replace(".", "").split()
    )


# --------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("f", "expected"),
    [
        (Condition("eq", "n", 3.0), True),
        (Condition("eq", "s", 3), False),
        (Condition("ne", "missing", 1), True),
        (Condition("gt", "n", 2), True),
        (Condition("lte", "n", 2), False),
        (Condition("gt", "missing", 2), False),
        (Condition("in", "s", ["x", "3"]), True),
        (Condition("not_in", "s", ["3"]), False),
        (Condition("starts_with", "s", ""), True),
        (Condition("list_contains", "l", "b"), True),
        (Condition("string_contains", "l", "b"), True),
        (Condition("string_contains", "s", "4"), False),
        (AllOf((Condition("eq", "n", 3), Condition("eq", "s", "3"))), True),
        (AnyOf((Condition("eq", "n", 4), Condition("eq", "s", "4"))), False),
    ],
)
def test_filter_semantics(f, expected):
    assert matches(f, {"n": 3, "s": "3", "l": ["a", "b"]}) is expected


# --------------------------------------------------------------------------- index and store


def _unit(rng, n, d):
    v = rng.normal(size=(n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_ivf_recall_against_brute_force():
    rng = np.random.default_rng(1)
    centres = _unit(rng, 50, 32)
    data = centres[rng.integers(0, 50, 6000)] + 0.3 * _unit(rng, 6000, 32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    index = VectorIndex(32, exact_limit=1000)
    index.add(list(range(6000)), data, [0] * 6000)
    index.train_now()
    assert index._ivf is not None
    hits = 0
    for q in data[:50]:
        hits += len({i for i, _ in index.search(q, 10)} & {i for i, _ in index.exact(q, 10)})
    assert hits / 500 >= 0.95


def test_store_replaces_atomically_and_survives_reopen(tmp_path):
    path = tmp_path / "chunks.sqlite"
    store = ChunkStore(path, 3)
    e = np.eye(3, dtype=np.float32)
    store.replace_document("ds", "s3://b/a", "s3://b/a", "S3", {"k": 1}, [NewChunk("alpha", e[0])])
    store.replace_document("ds", "s3://b/b", "s3://b/b", "S3", {"k": 2}, [NewChunk("beta", e[1])])
    store.replace_document("ds", "s3://b/a", "s3://b/a", "S3", {"k": 3}, [NewChunk("gamma", e[2])])
    assert store.count() == 2
    store.close()

    store = ChunkStore(path, 3)
    hits = retrieve(store, e[2], "gamma", 5)
    assert [h.text for h in hits][0] == "gamma"
    assert "alpha" not in {h.text for h in hits}
    assert hits[0].metadata["k"] == 3
    filtered = retrieve(store, e[2], "", 5, where=Condition("eq", "k", 2))
    assert [h.text for h in filtered] == ["beta"]

    with pytest.raises(ValueError):  # a bad vector fails the whole document
        store.replace_document("ds", "s3://b/b", "s3://b/b", "S3", {}, [NewChunk("x", np.ones(2))])
    assert {h.text for h in retrieve(store, e[1], "", 5)} == {"beta", "gamma"}
    assert store.delete_document("ds", "s3://b/b")
    assert [h.text for h in retrieve(store, e[1], "", 5)] == ["gamma"]


def test_hybrid_lifts_exact_keyword_matches(tmp_path):
    store = ChunkStore(tmp_path / "c.sqlite", 2)
    store.replace_document(
        "ds", "a", "a", "CUSTOM", {}, [NewChunk("the code is 4417", np.array([0.0, 1.0]))]
    )
    store.replace_document(
        "ds", "b", "b", "CUSTOM", {}, [NewChunk("the shed is green", np.array([1.0, 0.0]))]
    )
    store.replace_document(
        "ds", "c", "c", "CUSTOM", {}, [NewChunk("far away", np.array([-1.0, 0.0]))]
    )
    query = np.array([0.83, 0.55])  # semantically closer to "b", "a" second
    assert retrieve(store, query, "code 4417", 1)[0].text == "the shed is green"
    assert retrieve(store, query, "code 4417", 1, hybrid=True)[0].text == "the code is 4417"
    assert fuse([(1, 0.9), (2, 0.5), (3, 0.1)], [(2, 5.0)])[0] == (2, 0.75)


def test_hierarchical_hits_return_each_parent_once(tmp_path):
    store = ChunkStore(tmp_path / "h.sqlite", 2)
    parent = "Parent text with child one and child two."
    v = np.array([1.0, 0.0])
    store.replace_document(
        "ds", "d", "d", "CUSTOM", {},
        [NewChunk("child one", v, parent), NewChunk("child two", v * 0.99 + [0, 0.14], parent)],
    )  # fmt: skip
    store.replace_document("ds", "e", "e", "CUSTOM", {}, [NewChunk("other", np.array([0.0, 1.0]))])
    hits = retrieve(store, v, "child", 5)
    assert [h.text for h in hits] == [parent, "other"]


def test_keyword_search_ignores_function_words(tmp_path):
    store = ChunkStore(tmp_path / "k.sqlite", 2)
    v = np.array([1.0, 0.0])
    store.replace_document("ds", "a", "a", "CUSTOM", {}, [NewChunk("the cat is on the mat", v)])
    store.replace_document("ds", "b", "b", "CUSTOM", {}, [NewChunk("a zebra runs", v)])
    assert [cid for cid, _ in store.keyword_search("what is the zebra", 5)] == [2]
    assert len(store.keyword_search("the", 5)) == 1  # only function words: kept
