"""The Models page's read-out: catalog, install state, weight format and memory, joined.

Reads the same objects the server serves from (catalog, store, model manager); pulling
goes through :meth:`ModelStore.ensure`, the path ``serve --preload`` and first use take.
"""

from __future__ import annotations

import threading
from typing import Any

from outcrop.models.catalog import Catalog
from outcrop.models.manager import ModelManager
from outcrop.models.store import ModelStore


class ConsoleModels:
    def __init__(self, catalog: Catalog, store: ModelStore, manager: ModelManager) -> None:
        self.catalog = catalog
        self.store = store
        self.manager = manager
        self._pulls: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def list(self) -> list[dict[str, Any]]:
        loaded = {item.card.model_id: item for item in self.manager.loaded()}
        loading = set(self.manager.loading())
        out = []
        for card in sorted(self.catalog.all(), key=lambda c: (c.custom or c.imported, c.model_id)):
            path = self.store.path(card)
            record = self.store.record(card) or {}
            item = loaded.get(card.model_id)
            kind = "imported" if card.imported else "custom" if card.custom else "catalog"
            out.append(
                {
                    "modelId": card.model_id,
                    "name": card.name,
                    "provider": card.provider_name,
                    "kind": kind,
                    "arn": card.arn,
                    "format": _format(card.file_name, record),
                    "sizeBytes": (path.stat().st_size if path and path.is_file() else None)
                    or card.size_bytes,
                    "contextLength": card.context_length,
                    "installed": path is not None,
                    "weights": record.get("weights"),
                    "license": card.license,
                    "embedding": card.is_embedding,
                    "loaded": item is not None,
                    "loading": card.model_id in loading,
                    "memoryBytes": item.memory_bytes if item else None,
                    "pull": self._pull_state(card),
                }
            )
        return out

    def _pull_state(self, card) -> dict[str, Any] | None:  # noqa: ANN001 - ModelCard
        state = self._pulls.get(card.model_id)
        if state is None:
            return None
        if state["status"] == "pulling":
            done, total = self.store.wheels_fetched(card)
            return {**state, "wheelsFetched": done, "wheels": total}
        return dict(state)

    def pull(self, model_id: str) -> dict[str, Any]:
        card = self.catalog.get(model_id)
        if card is None:
            from outcrop.errors import ResourceNotFoundError

            raise ResourceNotFoundError(f"There is no model {model_id!r} in the catalog.")
        with self._lock:
            state = self._pulls.get(model_id)
            if state and state["status"] == "pulling":
                return state
            state = {"status": "pulling", "message": ""}
            self._pulls[model_id] = state
        threading.Thread(target=self._pull, args=(card, state), daemon=True).start()
        return state

    def _pull(self, card, state: dict[str, Any]) -> None:  # noqa: ANN001 - ModelCard
        try:
            self.store.ensure(card)
            state.update(status="installed")
        except Exception as exc:  # shown on the page, in words
            state.update(status="failed", message=str(exc) or type(exc).__name__)


def _format(file_name: str, record: dict[str, Any]) -> str:
    """The served weight format as the store's decision records it, else the file type."""
    weights = record.get("weights") or {}
    side = weights.get("converted") if weights.get("selected") == "converted" else None
    side = side or weights.get("original") or {}
    if side.get("format"):
        return str(side["format"])
    if file_name.endswith("/"):
        return "folder"
    return file_name.rsplit(".", 1)[-1] if "." in file_name else "files"
