"""Static token vectors distilled from the local MiniLM model, for fast policy embeddings.

Running MiniLM on a 1,000-character text takes 60-300 ms on this project's 2-core CPU
(measured: docs/guardrails.md), far over a guardrail's budget. So the policies embed text
the way model2vec does: every vocabulary token is run through the full sentence model once
(``[CLS] token [SEP]``, mean-pooled), and a text's vector is the weighted mean of its
tokens' vectors, centred on the vocabulary's mean and scaled to unit length. Weights
follow Zipf's law through the token's rank in the vocabulary (``log(rank)``: frequent
words count less), as model2vec does. Embedding a 1,000-character text is then one
tokenizer call and one table lookup: well under a millisecond.

The table (30,522 x 384, float16, 23 MB) is computed once per model file, in about a
minute on two cores, and kept in ``<data-dir>/guardrails/``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("outcrop.guardrails")

_FIRST_WORD_ID = 1996  # BERT uncased: ids below are [PAD], [unusedN], specials, characters
_BATCH = 512


class StaticEmbedder:
    def __init__(self, tokenizer_file: Path, table: np.ndarray) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()
        ids = np.arange(table.shape[0])
        self.weights = np.log(np.maximum(ids - _FIRST_WORD_ID + 2, 2)).astype(np.float32)
        table = table.astype(np.float32)
        mean = (table * self.weights[:, None]).sum(0) / self.weights.sum()
        self.table = table - mean

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.table.shape[1]), np.float32)
        for i, encoding in enumerate(self.tokenizer.encode_batch(texts, add_special_tokens=False)):
            ids = np.asarray(encoding.ids, dtype=np.int64)
            if ids.size == 0:
                continue
            w = self.weights[ids]
            out[i] = (self.table[ids] * w[:, None]).sum(0) / w.sum()
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)


def distill(model_dir: Path) -> np.ndarray:
    """One mean-pooled sentence-model vector per vocabulary token, (vocab, dims) float16."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu", local_files_only=True)
    model.eval()
    transformer = model[0].auto_model
    tokenizer = model.tokenizer
    vocab = len(tokenizer)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    table = np.zeros((vocab, transformer.config.hidden_size), np.float16)
    started = time.perf_counter()
    with torch.inference_mode():
        for lo in range(0, vocab, _BATCH):
            ids = torch.arange(lo, min(lo + _BATCH, vocab))
            batch = torch.stack([torch.full_like(ids, cls), ids, torch.full_like(ids, sep)], dim=1)
            hidden = transformer(input_ids=batch, attention_mask=torch.ones_like(batch))
            table[lo : lo + len(ids)] = hidden.last_hidden_state.mean(1).numpy()
    log.info("distilled %d token vectors in %.1f s", vocab, time.perf_counter() - started)
    return table


def load_or_distill(model_dir: Path, cache_dir: Path) -> StaticEmbedder:
    """The static embedder of the model in ``model_dir``, distilled on first use."""
    weights = model_dir / "model.safetensors"
    stamp = f"{weights.stat().st_size}-{int(weights.stat().st_mtime)}" if weights.exists() else "0"
    cache = cache_dir / f"static-{model_dir.name}-{stamp}.npy"
    if cache.exists():
        table = np.load(cache)
    else:
        log.info("guardrails: distilling static token vectors from %s (once)", model_dir)
        table = distill(model_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npy")
        np.save(tmp, table)
        tmp.replace(cache)
    return StaticEmbedder(model_dir / "tokenizer.json", table)
