"""The Models page's read-out: install state joined from the store, and a pull's progress."""

from __future__ import annotations

import threading
import time

import pytest

from outcrop.console.models import ConsoleModels
from outcrop.errors import ResourceNotFoundError
from outcrop.models.catalog import Catalog, ModelCard, WheelSource


def card(model_id: str, parts: int) -> ModelCard:
    return ModelCard(
        model_id=model_id, name=model_id, provider_name="Acme", context_length=2048,
        file_name="m.gguf", license="MIT",
        sources=tuple(WheelSource(f"pkg{i}", "1.0", f"m.part{i}") for i in range(parts)),
    )  # fmt: skip


class FakeStore:
    """Downloads one "wheel" per release of the gate; ``ensure`` returns when all are in."""

    def __init__(self) -> None:
        self.fetched = 0
        self.gate = threading.Semaphore(0)
        self.installed: set[str] = set()

    def path(self, c):
        return None

    def record(self, c):
        return None

    def wheels_fetched(self, c):
        return self.fetched, len(c.sources)

    def ensure(self, c):
        for _ in c.sources:
            self.gate.acquire()
            self.fetched += 1
        if c.model_id.startswith("broken"):
            raise RuntimeError("pip download pkg0==1.0 failed: no such package")
        self.installed.add(c.model_id)


class FakeManager:
    def loaded(self):
        return []

    def loading(self):
        return []


def wait_until(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_pull_reports_parts_downloaded_then_installed():
    store = FakeStore()
    models = ConsoleModels(Catalog([card("acme.big-v1:0", 4)]), store, FakeManager())
    assert models.pull("acme.big-v1:0")["status"] == "pulling"
    assert models.pull("acme.big-v1:0")["status"] == "pulling"  # a second click joins it
    (row,) = models.list()
    assert row["pull"] == {"status": "pulling", "message": "", "wheelsFetched": 0, "wheels": 4}
    store.gate.release()
    store.gate.release()
    wait_until(lambda: models.list()[0]["pull"]["wheelsFetched"] == 2)
    for _ in range(2):
        store.gate.release()
    wait_until(lambda: models.list()[0]["pull"]["status"] == "installed")


def test_a_failed_pull_says_why_and_an_unknown_model_is_refused():
    store = FakeStore()
    models = ConsoleModels(Catalog([card("broken.m-v1:0", 1)]), store, FakeManager())
    models.pull("broken.m-v1:0")
    store.gate.release()
    wait_until(lambda: models.list()[0]["pull"]["status"] == "failed")
    assert "pip download" in models.list()[0]["pull"]["message"]
    with pytest.raises(ResourceNotFoundError):
        models.pull("acme.nothing-v1:0")
