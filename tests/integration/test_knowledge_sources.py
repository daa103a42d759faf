"""Knowledge bases with real neighbours: langchain-aws's retriever as a client, moto's S3
server as the data source (``--s3-endpoint-url``), and a server killed with SIGKILL in
the middle of an ingestion, restarted, and resumed to a store that matches the documents."""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest

from tests.conftest import (
    EMBED,
    S3_ENV,
    make_data_dir,
    moto_s3,
    start_server,
    stop_server,
)
from tests.integration.test_knowledge_bases import create_kb, retrieve, s3_source, sync
from tests.kb_docs import pdf_bytes, write_corpus

pytestmark = pytest.mark.slow

pytest.importorskip("moto.server")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    with moto_s3() as (url, client):
        tmp = tmp_path_factory.mktemp("kb-s3")
        server = start_server(
            tmp, "--data-dir", str(make_data_dir(tmp)), "--s3-endpoint-url", url,
            "--alias", "amazon.titan-embed-*=" + EMBED, env_extra=S3_ENV,
        )  # fmt: skip
        yield client, server
        stop_server(server)


def test_moto_bucket_syncs_and_langchain_retrieves(s3, tmp_path):
    client, server = s3
    client.create_bucket(Bucket="kb-docs")
    folder = tmp_path / "corpus"
    write_corpus(folder)
    for path in folder.iterdir():
        client.put_object(Bucket="kb-docs", Key=f"team/{path.name}", Body=path.read_bytes())
    agent = server.client("bedrock-agent")
    kb_id = create_kb(agent, f"moto-{uuid.uuid4().hex[:6]}")
    ds_id = s3_source(agent, kb_id, "kb-docs", "team/")
    job = sync(agent, kb_id, ds_id)
    assert job["status"] == "COMPLETE", job
    assert job["statistics"]["numberOfNewDocumentsIndexed"] == 6
    assert job["statistics"]["numberOfDocumentsFailed"] == 1

    client.put_object(Bucket="kb-docs", Key="team/garden.txt", Body=b"The shed code is now 5150.")
    client.delete_object(Bucket="kb-docs", Key="team/trains.csv")
    stats = sync(agent, kb_id, ds_id)["statistics"]
    assert stats["numberOfModifiedDocumentsIndexed"] == 1
    assert stats["numberOfDocumentsDeleted"] == 1

    from langchain_aws import AmazonKnowledgeBasesRetriever

    retriever = AmazonKnowledgeBasesRetriever(
        knowledge_base_id=kb_id,
        client=server.client("bedrock-agent-runtime"),
        retrieval_config={"vectorSearchConfiguration": {"numberOfResults": 2}},
    )
    docs = retriever.invoke("What is the code of the shed?")
    assert len(docs) == 2
    assert "5150" in docs[0].page_content
    assert docs[0].metadata["location"]["s3Location"]["uri"] == "s3://kb-docs/team/garden.txt"
    assert docs[0].metadata["score"] > 0


def test_kill_mid_ingestion_then_restart_resumes_to_a_matching_store(tmp_path):
    data = make_data_dir(tmp_path)
    folder = data / "s3" / "crash" / "docs"
    folder.mkdir(parents=True)
    n = 150
    for i in range(n):
        (folder / f"doc-{i:03d}.txt").write_text(f"Document {i} holds the secret word w{i}x. " * 30)
    (folder / "doc-150.pdf").write_bytes(pdf_bytes(["The crash test PDF mentions zebra7."]))
    alias = ("--alias", "amazon.titan-embed-*=" + EMBED)
    server = start_server(tmp_path, "--data-dir", str(data), *alias)
    try:
        agent = server.client("bedrock-agent")
        kb_id = create_kb(agent, "crash")
        ds_id = s3_source(agent, kb_id, "crash", "docs/")
        job = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
        deadline = time.monotonic() + 120
        while True:
            job = agent.get_ingestion_job(
                knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job["ingestionJobId"]
            )["ingestionJob"]
            if job["statistics"]["numberOfNewDocumentsIndexed"] >= 10:
                break
            assert time.monotonic() < deadline and job["status"] != "COMPLETE", job
            time.sleep(0.05)
        os.kill(server.process.pid, signal.SIGKILL)
        server.process.wait(timeout=10)
    finally:
        stop_server(server)

    server = start_server(tmp_path, "--data-dir", str(data), *alias)
    try:
        agent = server.client("bedrock-agent")
        rt = server.client("bedrock-agent-runtime")
        deadline = time.monotonic() + 300
        while True:
            job = agent.get_ingestion_job(
                knowledgeBaseId=kb_id, dataSourceId=ds_id, ingestionJobId=job["ingestionJobId"]
            )["ingestionJob"]
            if job["status"] in ("COMPLETE", "FAILED", "STOPPED"):
                break
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
        assert job["status"] == "COMPLETE"
        assert job["statistics"]["numberOfNewDocumentsIndexed"] == n + 1  # none counted twice
        docs = agent.list_knowledge_base_documents(
            knowledgeBaseId=kb_id, dataSourceId=ds_id, maxResults=1000
        )["documentDetails"]
        assert len(docs) == n + 1 and {d["status"] for d in docs} == {"INDEXED"}
        again = sync(agent, kb_id, ds_id)["statistics"]
        assert again["numberOfNewDocumentsIndexed"] == 0
        assert again["numberOfModifiedDocumentsIndexed"] == 0
        for i in (0, 77, 149):
            hits = retrieve(rt, kb_id, f"secret word w{i}x", 5, overrideSearchType="HYBRID")
            assert hits[0]["location"]["s3Location"]["uri"].endswith(f"doc-{i:03d}.txt")
        # The store matches the documents: a clean knowledge base over the same files holds
        # exactly the same chunks (none missing, none twice).
        clean = create_kb(agent, "clean")
        assert sync(agent, clean, s3_source(agent, clean, "crash", "docs/"))["status"] == "COMPLETE"
        for query in ("secret word", "zebra7"):
            got, want = (
                sorted((h["location"]["s3Location"]["uri"], h["content"]["text"])
                       for h in retrieve(rt, k, query, 100))
                for k in (kb_id, clean)
            )  # fmt: skip
            assert got == want
    finally:
        stop_server(server)


def test_graceful_shutdown_mid_ingestion_is_quick_and_the_job_resumes(tmp_path):
    data = make_data_dir(tmp_path)
    folder = data / "s3" / "calm" / "docs"
    folder.mkdir(parents=True)
    for i in range(120):
        (folder / f"doc-{i:03d}.txt").write_text(f"Calm document {i} about topic t{i}. " * 30)
    alias = ("--alias", "amazon.titan-embed-*=" + EMBED)
    server = start_server(tmp_path, "--data-dir", str(data), *alias)
    try:
        agent = server.client("bedrock-agent")
        kb_id = create_kb(agent, "calm")
        ds_id = s3_source(agent, kb_id, "calm", "docs/")
        job = agent.start_ingestion_job(knowledgeBaseId=kb_id, dataSourceId=ds_id)["ingestionJob"]
        ids = {"knowledgeBaseId": kb_id, "dataSourceId": ds_id}
        deadline = time.monotonic() + 120
        while (
            agent.get_ingestion_job(**ids, ingestionJobId=job["ingestionJobId"])["ingestionJob"][
                "statistics"
            ]["numberOfNewDocumentsIndexed"]
            < 5
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        started = time.monotonic()
        server.process.terminate()
        server.process.wait(timeout=30)
        assert time.monotonic() - started < 15  # no deadlock between runner and loop
    finally:
        stop_server(server)
    server = start_server(tmp_path, "--data-dir", str(data), *alias)
    try:
        agent = server.client("bedrock-agent")
        deadline = time.monotonic() + 300
        while True:
            got = agent.get_ingestion_job(**ids, ingestionJobId=job["ingestionJobId"])
            if got["ingestionJob"]["status"] in ("COMPLETE", "FAILED", "STOPPED"):
                break
            assert time.monotonic() < deadline
            time.sleep(0.3)
        assert got["ingestionJob"]["status"] == "COMPLETE"
        assert got["ingestionJob"]["statistics"]["numberOfNewDocumentsIndexed"] == 120
    finally:
        stop_server(server)
