"""A GGUF's vocabulary without its weights: tokenize and render templates on a node that
does not run the model (an ingress replica)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import llama_cpp as ll

from outcrop.engines.llamacpp.model import LlamaModel, _init_backend


class Vocabulary(LlamaModel):
    """LlamaModel's vocabulary methods over a ``vocab_only`` load: no context, no KV."""

    def __init__(self, path: Path) -> None:  # noqa: D107 - no super(): nothing to decode with
        _init_backend(False)
        self.path = Path(path)
        params = ll.llama_model_default_params()
        params.vocab_only = True
        self.model = ll.llama_model_load_from_file(str(self.path).encode(), params)
        if not self.model:
            raise RuntimeError(f"llama.cpp could not read the vocabulary of {self.path}")
        self.ctx = None
        self.vocab = ll.llama_model_get_vocab(self.model)
        self.n_vocab = ll.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = ll.llama_model_n_ctx_train(self.model)
        self._piece_cache: dict[int, bytes] = {}
        self._piece_buf = ctypes.create_string_buffer(256)
