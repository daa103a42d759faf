"""Custom Model Import: bring a GGUF file, a Hugging Face folder, or what Ollama, LM Studio
or the Hugging Face cache already hold on this machine, and serve it as an imported model.

- :mod:`~outcrop.imports.layout`: what a source holds (one GGUF, or a Hugging Face folder),
  checked before any work: magic, truncation, missing config or weights.
- :mod:`~outcrop.imports.sources`: where sources come from (``file://``, ``s3://``,
  ``ollama:``, ``hf:``, LM Studio) and ``--scan``.
- :mod:`~outcrop.imports.converter`: llama.cpp's own ``convert_hf_to_gguf.py``.
- :mod:`~outcrop.imports.work`: one import, in resumable phases (fetch, inspect, convert,
  format, verify, install); run by the worker process or in the CLI.
- :mod:`~outcrop.imports.records`: import jobs and imported models in SQLite.
"""
