"""One durable job machinery for every kind of background job.

* :mod:`.records` — the ``jobs`` lifecycle table and its ``job_events``;
* :mod:`.store` — conditional state transitions (a lost race is an answer, not a bug);
* :mod:`.kinds` — what a kind of job declares: executor, slots, hooks;
* :mod:`.runner` — one loop that launches, watches, stops and recovers them all;
* :mod:`.files` — the file protocol a ``process`` worker reports through.

Each kind keeps its wire resource (names, ARNs, configs, counters) in a table of its own
keyed by the job id, and maps the states here to its API's words.
"""
