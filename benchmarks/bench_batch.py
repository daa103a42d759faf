"""Batch inference: throughput on idle capacity, and what it costs interactive traffic.

Side by side in one run, same model file, slots and threads:

(a) a batch of ``--records`` records on an idle server, output tokens/s from submission to
    completion, against the in-process engine ceiling (llama.cpp's own batched loop, no
    HTTP, no scheduler, greedy, the same prompts and max tokens) — goal >= 0.9x. Every
    record has its own prompt (a batch of documents), so neither side gains from prefix
    reuse;
(b) ``--interactive`` streaming clients: p99 time-to-first-token alone, then with a
    batch running at the same time — goal <= 1.25x — and how far the batch got meanwhile;
(c) cost per million output tokens at ``--price-per-hour``: batch (a) vs interactive.

    python benchmarks/bench_batch.py [--data-dir DIR] [--records 2000] [--max-tokens 32]
                                     [--parallel 32] [--threads 1] [--interactive 8]
                                     [--rounds 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

SUBJECTS = (
    "a lighthouse keeper", "a river pilot", "an orchard", "a night train", "a beekeeper",
    "a glacier", "a potter", "a desert well", "a clock tower", "a ferry captain",
    "a mountain hut", "a lantern maker", "a salt marsh", "a bookbinder", "a harbour seal",
)  # fmt: skip
PROMPT = "Write one sentence about a lighthouse keeper and the sea."


def record_prompt(i: int) -> str:
    """A distinct prompt per record, all about the same length."""
    return f"Write one sentence about {SUBJECTS[i % len(SUBJECTS)]} on day {i}."


def main() -> None:
    from outcrop.bench import baselines, report
    from outcrop.bench.client import BedrockClient, converse_body, run_load
    from outcrop.bench.runner import machine
    from outcrop.bench.serverproc import ServerProcess
    from outcrop.models.catalog import Catalog
    from outcrop.models.store import model_store
    from outcrop.settings import Settings

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--model", default="huggingface.smollm2-135m-instruct-v1:0")
    p.add_argument("--records", type=int, default=2000)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--parallel", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--interactive", type=int, default=8)
    p.add_argument("--interactive-requests", type=int, default=48)
    p.add_argument("--rounds", type=int, default=2, help="alternating (b) rounds")
    p.add_argument("--price-per-hour", type=float, default=0.5)
    p.add_argument("--json", type=Path)
    a = p.parse_args()

    settings = Settings(**({"data_dir": a.data_dir} if a.data_dir else {}))
    card = Catalog().get(a.model)
    path = model_store(settings).ensure(card, progress=True)
    body = converse_body(PROMPT, a.max_tokens)  # the interactive clients' request
    record_bodies = [converse_body(record_prompt(i), a.max_tokens) for i in range(a.records)]
    n_ctx_per_seq = 256
    out: dict = {"machine": machine(),
                 "model": a.model, "file": path.name, "records": a.records,
                 "max_tokens": a.max_tokens, "parallel": a.parallel, "threads": a.threads}  # fmt: skip

    print(f"engine ceiling: {a.records} requests, {a.parallel} at a time, in process ...")
    ceiling = baselines.batched_ceiling(
        path, card, record_bodies, n_seqs=a.parallel, n_requests=a.records,
        max_tokens=a.max_tokens, n_ctx_per_seq=n_ctx_per_seq, threads=a.threads,
    )  # fmt: skip
    out["ceiling_tokens_per_s"] = round(ceiling.tokens_per_s, 2)

    work = Path(tempfile.mkdtemp(prefix="outcrop-bench-batch-"))
    with ServerProcess(
        settings.data_dir, parallel=a.parallel, threads=a.threads, max_queue=256,
        n_ctx=n_ctx_per_seq, log_path=work / "server.log",
    ) as srv:  # fmt: skip
        import boto3

        bedrock = boto3.client(
            "bedrock", endpoint_url=srv.url, region_name="us-east-1",
            aws_access_key_id=srv.key, aws_secret_access_key=srv.secret,
        )  # fmt: skip

        def submit(name: str, n: int) -> str:
            folder = work / name
            folder.mkdir()
            (folder / "in.jsonl").write_text(
                "".join(json.dumps({"recordId": f"R{i:07d}", "modelInput": record_bodies[i]})
                        + "\n" for i in range(n))
            )  # fmt: skip
            return bedrock.create_model_invocation_job(
                jobName=name, roleArn="arn:aws:iam::123456789012:role/bench", modelId=a.model,
                modelInvocationType="Converse",
                inputDataConfig={"s3InputDataConfig": {"s3Uri": (folder / "in.jsonl").as_uri()}},
                outputDataConfig={"s3OutputDataConfig": {"s3Uri": (work / "out").as_uri()}},
            )["jobArn"]  # fmt: skip

        def job(arn: str) -> dict:
            return bedrock.get_model_invocation_job(jobIdentifier=arn)

        client = BedrockClient(srv.url, srv.key, srv.secret)
        asyncio.run(run_load(client, a.model, body, 1, 2))  # warm the model

        print(f"(a) batch of {a.records} records on the idle server ...")
        t0 = time.perf_counter()
        arn = submit("idle", a.records)
        while (j := job(arn))["status"] not in ("Completed", "PartiallyCompleted", "Failed"):
            time.sleep(0.2)
        wall = time.perf_counter() - t0
        manifest = json.loads(
            (work / "out" / arn.rsplit("/", 1)[1] / "manifest.json.out").read_text()
        )
        batch_tps = manifest["outputTokenCount"] / wall
        out["batch"] = {"status": j["status"], "wall_s": round(wall, 2),
                        "output_tokens": manifest["outputTokenCount"],
                        "errors": manifest["errorRecordCount"],
                        "tokens_per_s": round(batch_tps, 2)}  # fmt: skip

        async def load():
            c = BedrockClient(srv.url, srv.key, srv.secret)
            try:
                return await run_load(c, a.model, body, a.interactive, a.interactive_requests)
            finally:
                await c.aclose()

        # Alone and with-batch loads alternate, round after round, and each side's
        # requests are pooled: drift on the machine lands on both sides alike.
        alone_runs, busy_runs, progressed = [], [], 0
        for rnd in range(1, a.rounds + 1):
            print(f"(b) round {rnd}: {a.interactive} interactive streaming clients alone ...")
            alone_runs.append(asyncio.run(load()))
            print(f"(b) round {rnd}: the same clients while a batch runs ...")
            arn = submit(f"busy{rnd}", a.records)
            while job(arn)["status"] in ("Submitted", "Validating", "Scheduled"):
                time.sleep(0.1)
            time.sleep(1.0)  # the batch holds the slots before the clients arrive
            before = job(arn).get("processedRecordCount", 0)
            busy_runs.append(asyncio.run(load()))
            progressed += job(arn).get("processedRecordCount", 0) - before
            bedrock.stop_model_invocation_job(jobIdentifier=arn)
            while job(arn)["status"] not in ("Stopped", "Completed", "PartiallyCompleted"):
                time.sleep(0.2)
        alone = report.summarize_load(report.pooled(alone_runs))
        busy = report.summarize_load(report.pooled(busy_runs))
        out["interactive_alone"] = alone
        out["interactive_with_batch"] = busy
        out["batch_records_during_interactive"] = progressed
        interactive_tps = alone["output_tokens_per_s"]

    r = {
        "a_batch_vs_ceiling": report.ratio(batch_tps, ceiling.tokens_per_s),
        "b_ttft_p99_with_batch_vs_alone": report.ratio(busy["ttft_p99_ms"], alone["ttft_p99_ms"]),
        "b_ttft_p50_with_batch_vs_alone": report.ratio(busy["ttft_p50_ms"], alone["ttft_p50_ms"]),
    }
    cost = {
        "price_per_hour_usd": a.price_per_hour,
        "batch_usd_per_million_output_tokens": round(a.price_per_hour / 3600 / batch_tps * 1e6, 4),
        "interactive_usd_per_million_output_tokens": round(
            a.price_per_hour / 3600 / interactive_tps * 1e6, 4
        ),
    }
    cost["batch_vs_interactive"] = report.ratio(
        cost["batch_usd_per_million_output_tokens"],
        cost["interactive_usd_per_million_output_tokens"],
    )
    out["ratios"], out["cost"] = r, cost
    print(json.dumps(out, indent=2))
    print(f"CPU flags: {out['machine']['flags']}")
    print(f"(a) batch {batch_tps:.1f} tok/s vs engine ceiling {ceiling.tokens_per_s:.1f} tok/s: "
          f"{r['a_batch_vs_ceiling']}x (goal >= 0.9x)")  # fmt: skip
    print(f"(b) interactive p99 TTFT {busy['ttft_p99_ms']} ms with the batch vs "
          f"{alone['ttft_p99_ms']} ms alone: {r['b_ttft_p99_with_batch_vs_alone']}x (goal <= 1.25x); "
          f"the batch finished {progressed} records meanwhile, interactive errors "
          f"{busy['errors']}")  # fmt: skip
    print(
        f"(c) ${cost['batch_usd_per_million_output_tokens']} per million output tokens in a "
        f"batch vs ${cost['interactive_usd_per_million_output_tokens']} interactive "
        f"({a.interactive} clients) at ${a.price_per_hour}/h: {cost['batch_vs_interactive']}x"
    )
    if a.json:
        a.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
