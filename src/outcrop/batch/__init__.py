"""Batch inference and async invoke: big jobs in the engine's background class.

* :mod:`.records` — the jobs' wire resources (invocation_jobs, async_invokes);
* :mod:`.run` — reading JSONL input, one record at a time through a model callable,
  writing Bedrock's output layout, resuming from what was already written.
"""
