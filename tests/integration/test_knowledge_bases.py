"""Knowledge bases end to end through boto3's bedrock-agent and bedrock-agent-runtime:
a folder of real documents (text, Markdown, HTML, PDF, .docx, CSV, a corrupt PDF) synced,
searched with filters, re-synced after an edit and a delete, answered with citations,
streamed; direct ingestion; and the bad-input paths. One server with its own data dir."""

from __future__ import annotations

import time
import uuid

import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.conftest import EMBED, SMOL, make_data_dir, start_server, stop_server
from tests.integration.test_customization import ROLE
from tests.kb_docs import write_corpus

pytestmark = pytest.mark.slow

TITAN = "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"
HAIKU = "anthropic.claude-3-haiku-20240307-v1:0"


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("kb")
    data = make_data_dir(tmp)
    server = start_server(
        tmp, "--data-dir", str(data),
        "--alias", "amazon.titan-embed-*=" + EMBED,
        "--alias", "anthropic.claude-3-haiku-*=" + SMOL,
    )  # fmt: skip
    yield server, data
    stop_server(server)


@pytest.fixture(scope="module")
def agent(live):
    return live[0].client("bedrock-agent")


@pytest.fixture(scope="module")
def rt(live):
    return live[0].client("bedrock-agent-runtime")


def create_kb(agent, name: str, model: str = TITAN) -> str:
    kb = agent.create_knowledge_base(
        name=name, roleArn=ROLE,
        knowledgeBaseConfiguration={
            "type": "VECTOR",
            "vectorKnowledgeBaseConfiguration": {"embeddingModelArn": model},
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
    assert kb["status"] == "CREATING"
    deadline = time.monotonic() + 60
    while (
        agent.get_knowledge_base(knowledgeBaseId=kb["knowledgeBaseId"])["knowledgeBase"]["status"]
        != "ACTIVE"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return kb["knowledgeBaseId"]


def s3_source(agent, kb_id: str, bucket: str, prefix: str, chunking: dict | None = None) -> str:
    kwargs = {}
    if chunking:
        kwargs["vectorIngestionConfiguration"] = {"chunkingConfiguration": chunking}
    return agent.create_data_source(
        knowledgeBaseId=kb_id, name=f"ds-{uuid.uuid4().hex[:8]}",
        dataSourceConfiguration={
            "type": "S3",
            "s3Configuration": {
                "bucketArn": f"arn:aws:s3:::{bucket}", "inclusionPrefixes": [prefix],
            },
        },
        **kwargs,
    )["dataSource"]["dataSourceId"]  # fmt: skip


def sync(agent, kb_id: str, ds_id: str, timeout: float = 300) -> dict:
    job = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    deadline = time.monotonic() + timeout
    while job["status"] not in ("COMPLETE", "FAILED", "STOPPED"):
        assert time.monotonic() < deadline, job
        time.sleep(0.3)
        job = agent.get_ingestion_job(
            knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job["ingestionJobId"]
        )["ingestionJob"]
    return job


def retrieve(rt, kb_id: str, text: str, n: int = 3, **config) -> list[dict]:
    return rt.retrieve(
        knowledgeBaseId=kb_id,
        retrievalQuery={"text": text},
        retrievalConfiguration={"vectorSearchConfiguration": {"numberOfResults": n, **config}},
    )["retrievalResults"]


def code(exc: pytest.ExceptionInfo) -> tuple[str, int]:
    err = exc.value.response
    return err["Error"]["Code"], err["ResponseMetadata"]["HTTPStatusCode"]


@pytest.fixture(scope="module")
def corpus(live, agent):
    """A knowledge base over the test corpus, synced once: (kb id, ds id, folder, bucket)."""
    _, data = live
    bucket = f"docs-{uuid.uuid4().hex[:8]}"
    folder = data / "s3" / bucket / "kb"
    write_corpus(folder)
    (data / "s3" / bucket / "elsewhere.txt").write_text("Outside the inclusion prefix.")
    kb_id = create_kb(agent, f"corpus-{uuid.uuid4().hex[:6]}")
    ds_id = s3_source(agent, kb_id, bucket, "kb/")
    job = sync(agent, kb_id, ds_id)
    return kb_id, ds_id, folder, bucket, job


# --------------------------------------------------------------------------- sync + search


def test_sync_counts_every_document_and_the_corrupt_pdf_as_failed(corpus):
    *_, job = corpus
    assert job["status"] == "COMPLETE"
    stats = job["statistics"]
    assert stats["numberOfDocumentsScanned"] == 7
    assert stats["numberOfMetadataDocumentsScanned"] == 4
    assert stats["numberOfNewDocumentsIndexed"] == 6
    assert stats["numberOfDocumentsFailed"] == 1
    assert any("broken.pdf" in r for r in job["failureReasons"])


@pytest.mark.parametrize(
    ("question", "source", "phrase"),
    [
        ("What is the code of the tool shed in the garden?", "garden.txt", "4417"),
        ("When did Ruapehu last erupt?", "volcano.md", "1996"),
        ("How long does the sourdough rise?", "bakery.html", "thirty hours"),
        ("Who was the keeper of the lighthouse?", "lighthouse.pdf", "Agnes Wobble"),
        ("How long does Bluebird-3 take to orbit the Earth?", "orbit.docx", "ninety-two"),
        ("Which platform does the Northern Express leave from?", "trains.csv", "Northern"),
    ],
)
def test_retrieve_finds_the_passage_that_answers(corpus, rt, question, source, phrase):
    kb_id, *_ = corpus
    results = retrieve(rt, kb_id, question)
    top = results[0]
    assert top["location"]["type"] == "S3"
    assert top["location"]["s3Location"]["uri"].endswith("/kb/" + source)
    assert phrase in top["content"]["text"]
    assert 0 < top["score"] <= 1
    assert top["metadata"]["x-amz-bedrock-kb-source-uri"] == top["location"]["s3Location"]["uri"]
    assert "x-amz-bedrock-kb-chunk-id" in top["metadata"]
    assert [r["score"] for r in results] == sorted((r["score"] for r in results), reverse=True)


def test_html_scripts_and_other_prefixes_are_not_indexed(corpus, rt):
    kb_id, *_ = corpus
    texts = " ".join(r["content"]["text"] for r in retrieve(rt, kb_id, "hidden outside", 20))
    assert "never indexed" not in texts
    assert "Outside the inclusion prefix" not in texts


def test_retrieve_accepts_the_knowledge_base_arn_and_hybrid_search(corpus, rt):
    kb_id, *_ = corpus
    arn = f"arn:aws:bedrock:us-east-1:000000000000:knowledge-base/{kb_id}"
    hybrid = rt.retrieve(
        knowledgeBaseId=arn,
        retrievalQuery={"text": "tool shed code 4417"},
        retrievalConfiguration={
            "vectorSearchConfiguration": {"numberOfResults": 2, "overrideSearchType": "HYBRID"}
        },
    )["retrievalResults"]
    assert "4417" in hybrid[0]["content"]["text"]


@pytest.mark.parametrize(
    ("flt", "expected"),
    [
        ({"equals": {"key": "topic", "value": "geology"}}, {"volcano.md"}),
        ({"notEquals": {"key": "topic", "value": "geology"}},
         {"garden.txt", "bakery.html", "lighthouse.pdf", "orbit.docx", "trains.csv"}),
        ({"greaterThan": {"key": "year", "value": 2000}}, {"garden.txt", "bakery.html"}),
        ({"lessThanOrEquals": {"key": "year", "value": 1996}}, {"volcano.md", "lighthouse.pdf"}),
        ({"in": {"key": "topic", "value": ["food", "history"]}}, {"bakery.html", "lighthouse.pdf"}),
        ({"notIn": {"key": "topic", "value": ["food", "history", "geology"]}},
         {"garden.txt", "orbit.docx", "trains.csv"}),
        ({"listContains": {"key": "tags", "value": "outdoor"}}, {"garden.txt"}),
        ({"stringContains": {"key": "topic", "value": "eolo"}}, {"volcano.md"}),
        ({"startsWith": {"key": "topic", "value": "gard"}}, {"garden.txt"}),
        ({"andAll": [{"greaterThanOrEquals": {"key": "year", "value": 1996}},
                     {"lessThan": {"key": "year", "value": 2022}}]},
         {"garden.txt", "volcano.md"}),
        ({"orAll": [{"equals": {"key": "topic", "value": "food"}},
                    {"listContains": {"key": "tags", "value": "danger"}}]},
         {"bakery.html", "volcano.md"}),
    ],
)  # fmt: skip
def test_metadata_filters(corpus, rt, flt, expected):
    kb_id, *_ = corpus
    results = retrieve(rt, kb_id, "anything at all", 50, filter=flt)
    names = {r["location"]["s3Location"]["uri"].rsplit("/", 1)[1] for r in results}
    assert names == expected


def test_list_documents_shows_indexed_and_failed_with_reason(corpus, agent):
    kb_id, ds_id, *_ = corpus
    docs = agent.list_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id)[
        "documentDetails"
    ]
    status = {d["identifier"]["s3"]["uri"].rsplit("/", 1)[1]: d for d in docs}
    assert status["garden.txt"]["status"] == "INDEXED"
    assert status["broken.pdf"]["status"] == "FAILED"
    assert "PDF" in status["broken.pdf"]["statusReason"]


# --------------------------------------------------------------------------- incremental


def test_resync_reembeds_only_changes_and_removes_deleted(live, agent, rt):
    _, data = live
    bucket = f"inc-{uuid.uuid4().hex[:8]}"
    folder = data / "s3" / bucket / "docs"
    write_corpus(folder)
    kb_id = create_kb(agent, f"inc-{uuid.uuid4().hex[:6]}")
    ds_id = s3_source(agent, kb_id, bucket, "docs/")
    first = sync(agent, kb_id, ds_id)
    assert first["statistics"]["numberOfNewDocumentsIndexed"] == 6

    again = sync(agent, kb_id, ds_id)["statistics"]
    assert (again["numberOfNewDocumentsIndexed"], again["numberOfModifiedDocumentsIndexed"]) == (
        0,
        0,
    )
    assert again["numberOfDocumentsDeleted"] == 0

    (folder / "garden.txt").write_text(
        "The community garden on Elm Street moved its tool shed; the new shed code is 9902."
    )
    (folder / "volcano.md").unlink()
    (folder / "volcano.md.metadata.json").unlink()
    (folder / "broken.pdf").unlink()
    stats = sync(agent, kb_id, ds_id)["statistics"]
    assert stats["numberOfModifiedDocumentsIndexed"] == 1
    assert stats["numberOfNewDocumentsIndexed"] == 0
    assert stats["numberOfDocumentsDeleted"] == 1  # the failed PDF had nothing indexed
    assert stats["numberOfDocumentsScanned"] == 5

    top = retrieve(rt, kb_id, "What is the tool shed code?", 1)[0]
    assert "9902" in top["content"]["text"]
    texts = " ".join(r["content"]["text"] for r in retrieve(rt, kb_id, "volcano eruption", 20))
    assert "Ruapehu" not in texts and "4417" not in texts


# --------------------------------------------------------------------------- generate


def _consistent(output: str, citations: list[dict], retrieved: set[str]) -> None:
    assert citations
    for c in citations:
        part = c["generatedResponsePart"]["textResponsePart"]
        span = part["span"]
        assert output[span["start"] : span["end"] + 1] == part["text"]
        for ref in c["retrievedReferences"]:
            assert ref["content"]["text"] in retrieved
            assert ref["location"]["s3Location"]["uri"].startswith("s3://")


def test_retrieve_and_generate_answers_with_consistent_citations(corpus, rt):
    kb_id, *_ = corpus
    question = "Who was the keeper of the Kettle Point lighthouse?"
    config = {
        "type": "KNOWLEDGE_BASE",
        "knowledgeBaseConfiguration": {
            "knowledgeBaseId": kb_id,
            "modelArn": HAIKU,
            "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 2}},
            "generationConfiguration": {
                "inferenceConfig": {"textInferenceConfig": {"temperature": 0, "maxTokens": 60}}
            },
        },
    }
    out = rt.retrieve_and_generate(
        input={"text": question}, retrieveAndGenerateConfiguration=config
    )
    retrieved = {r["content"]["text"] for r in retrieve(rt, kb_id, question, 2)}
    assert out["output"]["text"]
    _consistent(out["output"]["text"], out["citations"], retrieved)
    cited = {ref["content"]["text"] for c in out["citations"] for ref in c["retrievedReferences"]}
    assert any("Agnes Wobble" in t for t in cited | {out["output"]["text"]})

    follow = rt.retrieve_and_generate(
        input={"text": "When was it built?"}, retrieveAndGenerateConfiguration=config,
        sessionId=out["sessionId"],
    )  # fmt: skip
    assert follow["sessionId"] == out["sessionId"]

    with pytest.raises(ClientError) as exc:
        rt.retrieve_and_generate(
            input={"text": question}, retrieveAndGenerateConfiguration=config,
            sessionId="no-such-session",
        )  # fmt: skip
    assert code(exc) == ("ValidationException", 400)


def test_prompt_template_gets_the_search_results(corpus, rt):
    kb_id, *_ = corpus
    template = "Repeat the first search result word for word and nothing else.\n$search_results$"
    out = rt.retrieve_and_generate(
        input={"text": "How long does the sourdough rise?"},
        retrieveAndGenerateConfiguration={
            "type": "KNOWLEDGE_BASE",
            "knowledgeBaseConfiguration": {
                "knowledgeBaseId": kb_id, "modelArn": SMOL,
                "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 1}},
                "generationConfiguration": {
                    "promptTemplate": {"textPromptTemplate": template},
                    "inferenceConfig": {"textInferenceConfig": {"temperature": 0, "maxTokens": 40}},
                },
            },
        },
    )  # fmt: skip
    assert "sourdough" in out["output"]["text"].lower() or "thirty" in out["output"]["text"].lower()


def test_stream_decodes_with_botocore_and_matches_its_citations(corpus, rt):
    kb_id, *_ = corpus
    question = "When did Mount Ruapehu last erupt?"
    resp = rt.retrieve_and_generate_stream(
        input={"text": question},
        retrieveAndGenerateConfiguration={
            "type": "KNOWLEDGE_BASE",
            "knowledgeBaseConfiguration": {
                "knowledgeBaseId": kb_id, "modelArn": HAIKU,
                "retrievalConfiguration": {"vectorSearchConfiguration": {"numberOfResults": 2}},
                "generationConfiguration": {
                    "inferenceConfig": {"textInferenceConfig": {"temperature": 0, "maxTokens": 60}}
                },
            },
        },
    )  # fmt: skip
    assert resp["sessionId"]
    text, citations = "", []
    for event in resp["stream"]:
        if "output" in event:
            text += event["output"]["text"]
        elif "citation" in event:
            citations.append(event["citation"])
    retrieved = {r["content"]["text"] for r in retrieve(rt, kb_id, question, 2)}
    assert text
    _consistent(text, citations, retrieved)


# --------------------------------------------------------------------------- direct ingestion


def test_custom_documents_ingest_get_retrieve_delete(agent, rt):
    kb_id = create_kb(agent, f"custom-{uuid.uuid4().hex[:6]}")
    ds_id = agent.create_data_source(
        knowledgeBaseId=kb_id, name="direct", dataSourceConfiguration={"type": "CUSTOM"},
        vectorIngestionConfiguration={"chunkingConfiguration": {"chunkingStrategy": "NONE"}},
    )["dataSource"]["dataSourceId"]  # fmt: skip

    def doc(doc_id: str, text: str, team: str) -> dict:
        return {
            "content": {
                "dataSourceType": "CUSTOM",
                "custom": {
                    "customDocumentIdentifier": {"id": doc_id}, "sourceType": "IN_LINE",
                    "inlineContent": {"type": "TEXT", "textContent": {"data": text}},
                },
            },
            "metadata": {
                "type": "IN_LINE_ATTRIBUTE",
                "inlineAttributes": [{"key": "team", "value": {"type": "STRING", "stringValue": team}}],
            },
        }  # fmt: skip

    details = agent.ingest_knowledge_base_documents(
        knowledgeBaseId=kb_id, dataSourceId=ds_id,
        documents=[
            doc("policy-1", "Employees may work remotely on Fridays.", "hr"),
            doc("policy-2", "The office coffee machine is descaled monthly.", "facilities"),
        ],
    )["documentDetails"]  # fmt: skip
    assert [d["status"] for d in details] == ["INDEXED", "INDEXED"]

    top = retrieve(rt, kb_id, "Can I work from home?", 1)[0]
    assert top["location"] == {"type": "CUSTOM", "customDocumentLocation": {"id": "policy-1"}}
    assert top["metadata"]["team"] == "hr"
    only = retrieve(rt, kb_id, "work", 5, filter={"equals": {"key": "team", "value": "facilities"}})
    assert [r["location"]["customDocumentLocation"]["id"] for r in only] == ["policy-2"]

    ident = {"dataSourceType": "CUSTOM", "custom": {"id": "policy-1"}}
    agent.delete_knowledge_base_documents(
        knowledgeBaseId=kb_id, dataSourceId=ds_id, documentIdentifiers=[ident]
    )
    got = agent.get_knowledge_base_documents(
        knowledgeBaseId=kb_id, dataSourceId=ds_id, documentIdentifiers=[ident]
    )["documentDetails"]
    assert got[0]["status"] == "NOT_FOUND"
    left = agent.list_knowledge_base_documents(knowledgeBaseId=kb_id, dataSourceId=ds_id)
    assert [d["identifier"]["custom"]["id"] for d in left["documentDetails"]] == ["policy-2"]
    assert all(
        r["location"]["customDocumentLocation"]["id"] == "policy-2"
        for r in retrieve(rt, kb_id, "remote work", 5)
    )


# --------------------------------------------------------------------------- control plane


def test_knowledge_base_and_data_source_lifecycle(agent):
    kb_id = create_kb(agent, f"life-{uuid.uuid4().hex[:6]}")
    kb = agent.get_knowledge_base(knowledgeBaseId=kb_id)["knowledgeBase"]
    assert kb["storageConfiguration"]["type"] == "OPENSEARCH_SERVERLESS"  # stored as sent
    assert kb["knowledgeBaseArn"].endswith(f":knowledge-base/{kb_id}")
    assert any(
        s["knowledgeBaseId"] == kb_id
        for s in agent.list_knowledge_bases()["knowledgeBaseSummaries"]
    )

    updated = agent.update_knowledge_base(
        knowledgeBaseId=kb_id, name=kb["name"], roleArn=ROLE, description="renamed",
        knowledgeBaseConfiguration=kb["knowledgeBaseConfiguration"],
    )["knowledgeBase"]  # fmt: skip
    assert updated["description"] == "renamed"

    ds_id = s3_source(agent, kb_id, "some-bucket", "x/")
    ds = agent.get_data_source(knowledgeBaseId=kb_id, dataSourceId=ds_id)["dataSource"]
    assert ds["status"] == "AVAILABLE"
    assert [
        d["dataSourceId"]
        for d in agent.list_data_sources(knowledgeBaseId=kb_id)["dataSourceSummaries"]
    ] == [ds_id]
    assert (
        agent.delete_data_source(knowledgeBaseId=kb_id, dataSourceId=ds_id)["status"] == "DELETING"
    )
    with pytest.raises(ClientError) as exc:
        agent.get_data_source(knowledgeBaseId=kb_id, dataSourceId=ds_id)
    assert code(exc) == ("ResourceNotFoundException", 404)

    assert agent.delete_knowledge_base(knowledgeBaseId=kb_id)["status"] == "DELETING"
    deadline = time.monotonic() + 30
    while True:
        try:
            agent.get_knowledge_base(knowledgeBaseId=kb_id)
        except ClientError as e:
            assert e.response["Error"]["Code"] == "ResourceNotFoundException"
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)


def test_missing_job_fails_with_the_bucket_reason(agent):
    kb_id = create_kb(agent, f"nobucket-{uuid.uuid4().hex[:6]}")
    ds_id = s3_source(agent, kb_id, "no-such-bucket-here", "x/")
    job = sync(agent, kb_id, ds_id)
    assert job["status"] == "FAILED"
    assert any("no-such-bucket-here" in r for r in job["failureReasons"])
    jobs = agent.list_ingestion_jobs(
        knowledgeBaseId=kb_id, dataSourceId=ds_id,
        filters=[{"attribute": "STATUS", "operator": "EQ", "values": ["FAILED"]}],
        sortBy={"attribute": "STARTED_AT", "order": "DESCENDING"},
    )["ingestionJobSummaries"]  # fmt: skip
    assert [j["ingestionJobId"] for j in jobs] == [job["ingestionJobId"]]


def test_deleting_a_knowledge_base_during_ingestion_stops_the_job(live, agent):
    _, data = live
    bucket = f"big-{uuid.uuid4().hex[:8]}"
    folder = data / "s3" / bucket / "many"
    folder.mkdir(parents=True)
    for i in range(400):
        (folder / f"note-{i:03d}.txt").write_text(f"Note {i}: the number {i} is noted here. " * 20)
    kb_id = create_kb(agent, f"big-{uuid.uuid4().hex[:6]}")
    ds_id = s3_source(agent, kb_id, bucket, "many/")
    job = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
    deadline = time.monotonic() + 60
    while True:
        job = agent.get_ingestion_job(
            knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job["ingestionJobId"]
        )["ingestionJob"]
        if job["statistics"]["numberOfNewDocumentsIndexed"] > 0:
            break
        assert time.monotonic() < deadline and job["status"] in ("STARTING", "IN_PROGRESS")
        time.sleep(0.1)
    with pytest.raises(ClientError) as exc:
        agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)
    assert code(exc) == ("ConflictException", 409)
    agent.delete_knowledge_base(knowledgeBaseId=kb_id)
    deadline = time.monotonic() + 60
    while True:
        try:
            agent.get_knowledge_base(knowledgeBaseId=kb_id)
        except ClientError:
            break
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert not (data / "knowledge" / kb_id).exists()


# --------------------------------------------------------------------------- bad input


def test_unknown_resources_are_not_found(agent, rt):
    for call in (
        lambda: agent.get_knowledge_base(knowledgeBaseId="NOSUCHKB00"),
        lambda: agent.get_data_source(knowledgeBaseId="NOSUCHKB00", dataSourceId="NOSUCHDS00"),
        lambda: rt.retrieve(knowledgeBaseId="NOSUCHKB00", retrievalQuery={"text": "x"}),
    ):
        with pytest.raises(ClientError) as exc:
            call()
        assert code(exc) == ("ResourceNotFoundException", 404)


def test_validation_errors(corpus, agent, rt, live):
    kb_id, *_ = corpus
    with pytest.raises(ClientError) as exc:
        create_kb(agent, f"notembed-{uuid.uuid4().hex[:6]}", model=SMOL)
    assert code(exc) == ("ValidationException", 400)
    for chunking in (
        {"chunkingStrategy": "FIXED_SIZE",
         "fixedSizeChunkingConfiguration": {"maxTokens": 300, "overlapPercentage": 100}},
        {"chunkingStrategy": "FIXED_SIZE",
         "fixedSizeChunkingConfiguration": {"maxTokens": 9000, "overlapPercentage": 20}},
        {"chunkingStrategy": "HIERARCHICAL",
         "hierarchicalChunkingConfiguration": {
             "levelConfigurations": [{"maxTokens": 100}, {"maxTokens": 300}], "overlapTokens": 20}},
        {"chunkingStrategy": "SEMANTIC",
         "semanticChunkingConfiguration": {
             "maxTokens": 300, "bufferSize": 0, "breakpointPercentileThreshold": 100}},
    ):  # fmt: skip
        with pytest.raises(ClientError) as exc:
            s3_source(agent, kb_id, "b-bucket", "x/", chunking)
        assert code(exc) == ("ValidationException", 400)
    with pytest.raises(ClientError) as exc:
        retrieve(rt, kb_id, "x", 101)
    assert code(exc) == ("ValidationException", 400)
    loose = live[0].client("bedrock-agent-runtime", config=Config(parameter_validation=False))
    with pytest.raises(ClientError) as exc:
        retrieve(loose, kb_id, "x", 3, filter={"andAll": [{"equals": {"key": "a", "value": 1}}]})
    assert code(exc) == ("ValidationException", 400)
    name = f"dup-{uuid.uuid4().hex[:6]}"
    create_kb(agent, name)
    with pytest.raises(ClientError) as exc:
        create_kb(agent, name)
    assert code(exc) == ("ConflictException", 409)


# --------------------------------------------------------------------------- CLI


def test_cli_sync_watch_and_list(corpus, live):
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import TEST_KEY, TEST_SECRET

    server, data = live
    kb_id, ds_id, *_ = corpus
    env = {
        **os.environ,
        "OUTCROP_ACCESS_KEY_ID": TEST_KEY,
        "OUTCROP_SECRET_ACCESS_KEY": TEST_SECRET,
    }
    base = [sys.executable, "-m", "outcrop", "kb"]
    done = subprocess.run(
        [*base, "sync", kb_id, ds_id, "--watch", "--data-dir", str(data),
         "--endpoint", server.url],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "COMPLETE 0 new, 0 modified, 0 deleted, 1 failed" in done.stdout
    assert "broken.pdf" in done.stdout
    listed = subprocess.run(
        [*base, "list", "--json", "--data-dir", str(data)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    rows = {r["dataSourceId"]: r for r in json.loads(listed.stdout)}
    assert rows[ds_id]["documents"] == 6 and rows[ds_id]["status"] == "ACTIVE"


def test_stop_ingestion_job_then_a_new_sync_finishes_only_the_rest(live, agent):
    _, data = live
    bucket = f"stop-{uuid.uuid4().hex[:8]}"
    folder = data / "s3" / bucket / "docs"
    folder.mkdir(parents=True)
    n = 300  # several embedding batches, so the stop lands mid-way even on a fast machine
    for i in range(n):
        (folder / f"n-{i:03d}.txt").write_text(f"Short note number {i} about item i{i}.")
    kb_id = create_kb(agent, f"stop-{uuid.uuid4().hex[:6]}")
    ds_id = s3_source(agent, kb_id, bucket, "docs/")
    ids = {"knowledgeBaseId": kb_id, "dataSourceId": ds_id}
    job = agent.start_ingestion_job(**ids)["ingestionJob"]
    deadline = time.monotonic() + 60
    while True:
        job = agent.get_ingestion_job(**ids, ingestionJobId=job["ingestionJobId"])["ingestionJob"]
        if job["statistics"]["numberOfNewDocumentsIndexed"] > 0:
            break
        assert time.monotonic() < deadline and job["status"] in ("STARTING", "IN_PROGRESS")
        time.sleep(0.05)
    stopped = agent.stop_ingestion_job(**ids, ingestionJobId=job["ingestionJobId"])["ingestionJob"]
    assert stopped["status"] in ("STOPPING", "STOPPED")
    deadline = time.monotonic() + 60
    while job["status"] != "STOPPED":
        assert time.monotonic() < deadline, job
        time.sleep(0.1)
        job = agent.get_ingestion_job(**ids, ingestionJobId=job["ingestionJobId"])["ingestionJob"]
    done_first = job["statistics"]["numberOfNewDocumentsIndexed"]
    assert 0 < done_first < n
    with pytest.raises(ClientError) as exc:
        agent.stop_ingestion_job(**ids, ingestionJobId=job["ingestionJobId"])
    assert code(exc) == ("ConflictException", 409)

    rest = sync(agent, kb_id, ds_id)
    assert rest["status"] == "COMPLETE"
    assert rest["statistics"]["numberOfNewDocumentsIndexed"] == n - done_first
    statuses = [
        j["status"]
        for j in agent.list_ingestion_jobs(
            **ids, sortBy={"attribute": "STARTED_AT", "order": "ASCENDING"}
        )["ingestionJobSummaries"]
    ]
    assert statuses == ["STOPPED", "COMPLETE"]


def _custom_source(agent, kb_id: str, chunking: dict) -> str:
    return agent.create_data_source(
        knowledgeBaseId=kb_id, name=f"c-{uuid.uuid4().hex[:6]}",
        dataSourceConfiguration={"type": "CUSTOM"},
        vectorIngestionConfiguration={"chunkingConfiguration": chunking},
    )["dataSource"]["dataSourceId"]  # fmt: skip


def _ingest_text(agent, kb_id: str, ds_id: str, doc_id: str, text: str) -> None:
    details = agent.ingest_knowledge_base_documents(
        knowledgeBaseId=kb_id, dataSourceId=ds_id,
        documents=[{"content": {"dataSourceType": "CUSTOM", "custom": {
            "customDocumentIdentifier": {"id": doc_id}, "sourceType": "IN_LINE",
            "inlineContent": {"type": "TEXT", "textContent": {"data": text}}}}}],
    )["documentDetails"]  # fmt: skip
    assert details[0]["status"] == "INDEXED", details


CATS = (
    "Cats are small domesticated carnivores. A cat purrs when it is content. Cats groom "
    "their fur with rough tongues. Kittens are born blind and open their eyes after a week. "
)
ROCKETS = (
    "Rockets carry satellites into orbit. A rocket engine burns liquid oxygen and kerosene. "
    "Booster stages fall away after their fuel is spent. The payload fairing opens in space. "
)


def test_semantic_chunking_cuts_between_topics(agent, rt):
    kb_id = create_kb(agent, f"sem-{uuid.uuid4().hex[:6]}")
    ds_id = _custom_source(agent, kb_id, {
        "chunkingStrategy": "SEMANTIC",
        "semanticChunkingConfiguration": {
            "maxTokens": 200, "bufferSize": 0, "breakpointPercentileThreshold": 85},
    })  # fmt: skip
    _ingest_text(agent, kb_id, ds_id, "mixed", CATS + ROCKETS)
    chunks = [r["content"]["text"] for r in retrieve(rt, kb_id, "cats and rockets", 10)]
    assert len(chunks) >= 2
    assert not any("purrs" in c and "kerosene" in c for c in chunks)  # never one mixed chunk
    assert "purrs" in retrieve(rt, kb_id, "Why does a cat purr?", 1)[0]["content"]["text"]


def test_hierarchical_chunking_returns_the_parent_passage(agent, rt):
    kb_id = create_kb(agent, f"hier-{uuid.uuid4().hex[:6]}")
    ds_id = _custom_source(agent, kb_id, {
        "chunkingStrategy": "HIERARCHICAL",
        "hierarchicalChunkingConfiguration": {
            "levelConfigurations": [{"maxTokens": 120}, {"maxTokens": 20}], "overlapTokens": 4},
    })  # fmt: skip
    _ingest_text(agent, kb_id, ds_id, "animals-and-rockets", CATS + ROCKETS)
    results = retrieve(rt, kb_id, "What does a rocket engine burn?", 3)
    top = results[0]["content"]["text"]
    assert "kerosene" in top
    assert len(top.split()) > 20  # the parent, not the 20-token child that matched
    texts = [r["content"]["text"] for r in results]
    assert len(texts) == len(set(texts))  # several matching children, one parent each


def test_fixed_size_chunking_respects_max_tokens(agent, rt):
    kb_id = create_kb(agent, f"fix-{uuid.uuid4().hex[:6]}")
    ds_id = _custom_source(agent, kb_id, {
        "chunkingStrategy": "FIXED_SIZE",
        "fixedSizeChunkingConfiguration": {"maxTokens": 16, "overlapPercentage": 25},
    })  # fmt: skip
    _ingest_text(agent, kb_id, ds_id, "cats", CATS)
    chunks = [r["content"]["text"] for r in retrieve(rt, kb_id, "cats", 20)]
    assert len(chunks) >= 3
    assert all(len(c.split()) <= 16 for c in chunks)  # 16 tokens never exceed 16 words


def test_readme_flow_without_waiting_for_active(live, agent, rt):
    """The README's lines as a newcomer runs them: no polling between create and sync."""
    _, data = live
    bucket = f"my-docs-{uuid.uuid4().hex[:6]}"
    folder = data / "s3" / bucket / "handbook"
    folder.mkdir(parents=True)
    (folder / "leave.md").write_text("# Leave\n\nEvery employee gets 27 vacation days a year.")
    (folder / "travel.txt").write_text("Train travel is reimbursed in second class.")
    kb = agent.create_knowledge_base(
        name=f"handbook-{uuid.uuid4().hex[:6]}", roleArn=ROLE,
        knowledgeBaseConfiguration={"type": "VECTOR", "vectorKnowledgeBaseConfiguration": {
            "embeddingModelArn": "amazon.titan-embed-text-v2:0"}},
    )["knowledgeBase"]["knowledgeBaseId"]  # fmt: skip
    ds = agent.create_data_source(knowledgeBaseId=kb, name="docs", dataSourceConfiguration={
        "type": "S3", "s3Configuration": {
            "bucketArn": f"arn:aws:s3:::{bucket}", "inclusionPrefixes": ["handbook/"]}},
    )["dataSource"]["dataSourceId"]  # fmt: skip
    job = agent.start_ingestion_job(knowledgeBaseId=kb, dataSourceId=ds)["ingestionJob"]
    deadline = time.monotonic() + 120
    while job["status"] != "COMPLETE":
        assert time.monotonic() < deadline and job["status"] in ("STARTING", "IN_PROGRESS"), job
        time.sleep(0.2)
        job = agent.get_ingestion_job(
            knowledgeBaseId=kb, dataSourceId=ds, ingestionJobId=job["ingestionJobId"]
        )["ingestionJob"]
    top = rt.retrieve(knowledgeBaseId=kb, retrievalQuery={"text": "How many vacation days?"})
    assert "27 vacation days" in top["retrievalResults"][0]["content"]["text"]
    out = rt.retrieve_and_generate(
        input={"text": "How many vacation days?"},
        retrieveAndGenerateConfiguration={"type": "KNOWLEDGE_BASE", "knowledgeBaseConfiguration": {
            "knowledgeBaseId": kb, "modelArn": SMOL}},
    )  # fmt: skip
    assert out["output"]["text"] and out["citations"]
