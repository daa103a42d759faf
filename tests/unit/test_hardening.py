"""Hardening limits, each as a pure function: sizes, confinement, timeouts, permissions."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from outcrop.api import limits
from outcrop.credentials import load_or_create_credentials
from outcrop.db import Database
from outcrop.errors import ValidationError
from outcrop.locations import DataLocations, confined_file, local_s3_path, s3_client, valid_bucket
from outcrop.settings import Settings


def test_content_length_over_the_limit_is_refused_before_reading() -> None:
    with pytest.raises(ValidationError, match="1000000000 bytes"):
        limits.check_head([(b"content-length", b"1000000000")])
    assert limits.check_head([(b"content-length", b"12")]) == 12
    assert limits.check_head([]) is None


@pytest.mark.parametrize(
    "headers",
    [
        [(b"x-big", b"a" * (limits.MAX_HEADER_BYTES + 1))],
        [(f"x-{i}".encode(), b"v") for i in range(limits.MAX_HEADERS + 1)],
        [(b"content-length", b"5"), (b"content-length", b"6")],
        [(b"content-length", b"-1")],
    ],
    ids=["header-bytes", "header-count", "conflicting-length", "negative-length"],
)
def test_bad_request_heads_are_validation_errors(headers) -> None:
    with pytest.raises(ValidationError):
        limits.check_head(headers)


def test_streamed_body_is_cut_at_the_limit_not_buffered(monkeypatch) -> None:
    monkeypatch.setattr(limits, "MAX_BODY_BYTES", 1000)
    pulled = 0

    async def chunks():
        nonlocal pulled
        while True:  # endless: only the limit ends it
            pulled += 1
            yield b"x" * 100

    with pytest.raises(ValidationError, match="larger than"):
        asyncio.run(limits.read_limited(chunks()))
    assert pulled == 11  # stopped at the first chunk past the limit


def test_slow_body_times_out(monkeypatch) -> None:
    monkeypatch.setattr(limits, "BODY_TIMEOUT_S", 0.05)

    async def chunks():
        yield b"{"
        await asyncio.sleep(10)
        yield b"}"

    with pytest.raises(ValidationError, match="did not arrive"):
        asyncio.run(limits.read_limited(chunks()))


def test_file_locations_refuse_dot_dot_and_leave_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "in").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path, target_is_directory=True)
    ok = root / "in" / "a.jsonl"
    assert confined_file(ok, (root,), ok.as_uri(), "input") == ok
    assert confined_file(ok, None, ok.as_uri(), "input") == ok
    for bad in (root / "in" / ".." / ".." / "x", root / "link" / "secret"):
        with pytest.raises(ValidationError):
            confined_file(bad, (root,), "file://" + str(bad), "input")
    with pytest.raises(ValidationError, match="beyond loopback"):
        confined_file(ok, (), ok.as_uri(), "input")
    with pytest.raises(ValidationError, match="'..'"):
        confined_file(Path("/a/../etc/passwd"), None, "file:///a/../etc/passwd", "input")


def test_local_s3_paths_stay_in_their_bucket(tmp_path: Path) -> None:
    (tmp_path / "s3" / "bkt").mkdir(parents=True)
    (tmp_path / "s3" / "bkt" / "out").symlink_to(tmp_path, target_is_directory=True)
    assert local_s3_path(tmp_path, "bkt", "a/b.jsonl", "s3://bkt/a/b.jsonl", "input")
    for bucket, key in (("..", "credentials.json"), ("bkt", "../x"), ("bkt", "out/outcrop.db")):
        with pytest.raises(ValidationError):
            local_s3_path(tmp_path, bucket, key, f"s3://{bucket}/{key}", "input")
    with pytest.raises(ValidationError):
        DataLocations(tmp_path).parse("s3://../credentials.json", "input")
    assert not valid_bucket("..") and not valid_bucket("a/b") and valid_bucket("my-bucket.1")


def test_file_roots_default_to_none_beyond_loopback(tmp_path: Path) -> None:
    base = {"data_dir": tmp_path}
    assert Settings(**base).file_root_paths is None  # loopback: anywhere
    assert Settings(**base, host="0.0.0.0").file_root_paths == ()
    roots = Settings(**base, host="0.0.0.0", file_roots=f"{tmp_path}/a:{tmp_path}/b")
    assert roots.file_root_paths == (tmp_path / "a", tmp_path / "b")
    locations = DataLocations(tmp_path, file_roots=())
    with pytest.raises(ValidationError, match="file-roots"):
        locations.parse((tmp_path / "x.jsonl").as_uri(), "input")


def test_s3_calls_have_timeouts() -> None:
    config = s3_client("http://127.0.0.1:9").meta.config
    assert config.connect_timeout == 10 and config.read_timeout == 60
    assert config.retries["mode"] == "standard"


def test_credentials_and_records_are_owner_only(tmp_path: Path) -> None:
    load_or_create_credentials(tmp_path)
    Database(tmp_path).create_tables()
    for name in ("credentials.json", "outcrop.db"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600, name


class _Body:
    def __init__(self, body: bytes) -> None:
        self.body = body


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": ' + b"[" * 200_000 + b"]" * 200_000 + b"}",  # RecursionError: was a 500
        b'{"text": "\\ud800 alone"}',  # a lone surrogate: was a 500 deeper down
        b'{"text": "\\udfff"}',
    ],
    ids=["nesting-200000-deep", "lone-high-surrogate", "lone-low-surrogate"],
)
def test_bodies_the_contract_fuzzer_broke_are_validation_errors(body) -> None:
    from outcrop.api.app import Call

    with pytest.raises(ValidationError, match="Malformed input request"):
        Call.json(_Body(body))  # type: ignore[arg-type]


def test_a_surrogate_pair_is_still_accepted() -> None:
    from outcrop.api.app import Call

    assert Call.json(_Body(b'{"t": "\\ud83e\\udd9c"}')) == {"t": "🦜"}  # type: ignore[arg-type]


def test_a_new_data_dir_is_owner_only(tmp_path: Path) -> None:
    from outcrop.server import build_server

    data = tmp_path / "fresh"
    build_server(Settings(data_dir=data, auth="none"))
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "outcrop.db").stat().st_mode) == 0o600
