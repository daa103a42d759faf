"""Knowledge bases, the domain part: documents in, chunks and vectors out, search.

No wire names here (the service layer translates Bedrock's camelCase to these objects):

* :mod:`.parsers`: bytes of a .txt/.md/.html/.csv/.pdf/.docx file -> plain text.
* :mod:`.metadata`: ``<file>.metadata.json`` sidecars -> a flat attribute dict.
* :mod:`.chunking`: text -> chunks (fixed-size, hierarchical, semantic, none).
* :mod:`.filters`: a metadata filter tree and its evaluation.
* :mod:`.index`: the in-memory vector index (exact, or IVF past a size) over the store.
* :mod:`.store`: one SQLite file per knowledge base: chunks, vectors, FTS5 for BM25.
* :mod:`.sources`: where documents come from (a local folder, an S3-compatible bucket).
* :mod:`.records`: knowledge bases, data sources, ingestion jobs, documents (SQLAlchemy).
* :mod:`.ingest`: one resumable sync of a data source into the store.
* :mod:`.runner`: runs ingestion jobs in the background and resumes them on restart.
"""
