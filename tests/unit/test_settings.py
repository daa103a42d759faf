from __future__ import annotations

import os
from pathlib import Path

import pytest

from outcrop.settings import Settings, default_data_dir, is_loopback_host, parse_alias


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for key in list(os.environ):
        if key.startswith("OUTCROP_"):
            monkeypatch.delenv(key)


def test_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    s = Settings()
    assert (s.host, s.port, s.auth, s.region, s.account_id) == (
        "127.0.0.1",
        8000,
        "sigv4",
        "us-east-1",
        "000000000000",
    )
    assert s.data_dir == tmp_path / "outcrop"
    assert s.aliases == []
    assert (s.max_queue, s.max_batch, s.n_threads, s.n_ctx, s.prefill_chunk) == (
        64,
        32,
        None,
        2048,
        64,
    )
    assert s.access_key_id is None and s.secret_access_key is None and s.api_key is None
    assert s.config_file is None
    assert s.models_dir == tmp_path / "outcrop" / "models"


def test_default_data_dir_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_data_dir() == tmp_path / ".local" / "share" / "outcrop"


def test_env(monkeypatch, tmp_path):
    monkeypatch.setenv("OUTCROP_PORT", "9001")
    monkeypatch.setenv("OUTCROP_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("OUTCROP_ACCESS_KEY_ID", "AKIDTEST")
    monkeypatch.setenv("OUTCROP_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("OUTCROP_API_KEY", "bedrock-api-key")
    monkeypatch.setenv("OUTCROP_MAX_QUEUE", "5")
    monkeypatch.setenv("OUTCROP_N_THREADS", "3")
    monkeypatch.setenv("OUTCROP_GPU_LAYERS", "-1")
    monkeypatch.setenv("OUTCROP_LLAMA_LOG", "1")
    monkeypatch.setenv("OUTCROP_ALIASES", "anthropic.*=google.gemma-3-270m-v1:0,*embed*=x.y")
    s = Settings()
    assert s.port == 9001 and s.data_dir == tmp_path
    assert (s.access_key_id, s.secret_access_key, s.api_key) == (
        "AKIDTEST",
        "secret",
        "bedrock-api-key",
    )
    assert s.max_queue == 5 and s.n_threads == 3
    assert s.gpu_layers == -1 and s.llama_log is True
    assert s.aliases == [("anthropic.*", "google.gemma-3-270m-v1:0"), ("*embed*", "x.y")]
    assert "secret" not in repr(s) and "bedrock-api-key" not in repr(s)


def test_aliases_json_env(monkeypatch):
    monkeypatch.setenv("OUTCROP_ALIASES", '[["a.*", "b.c"], ["d*", "e.f"]]')
    assert Settings().aliases == [("a.*", "b.c"), ("d*", "e.f")]
    monkeypatch.setenv("OUTCROP_ALIASES", '{"a.*": "b.c"}')
    assert Settings().aliases == [("a.*", "b.c")]


def test_init_kwargs_beat_env(monkeypatch):
    monkeypatch.setenv("OUTCROP_PORT", "9001")
    assert Settings(port=9002).port == 9002


def test_config_file(monkeypatch, tmp_path):
    cfg = tmp_path / "outcrop.toml"
    cfg.write_text(
        'port = 9100\nregion = "eu-west-1"\nmax_batch = 4\n'
        "[aliases]\n"
        '"anthropic.claude-*" = "huggingface.smollm2-135m-instruct-v1:0"\n'
        '"*embed*" = "sentence-transformers.all-minilm-l6-v2-v1:0"\n'
    )
    s = Settings(config_file=cfg)
    assert s.port == 9100 and s.region == "eu-west-1" and s.max_batch == 4
    assert s.aliases == [
        ("anthropic.claude-*", "huggingface.smollm2-135m-instruct-v1:0"),
        ("*embed*", "sentence-transformers.all-minilm-l6-v2-v1:0"),
    ]
    assert s.config_file == cfg
    # env beats the file; the file can also be named by env
    monkeypatch.setenv("OUTCROP_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("OUTCROP_PORT", "9200")
    s = Settings()
    assert s.port == 9200 and s.region == "eu-west-1"


def test_config_file_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        Settings(config_file=tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("port = = 1\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        Settings(config_file=bad)
    typo = tmp_path / "typo.toml"
    typo.write_text("prot = 1\n")
    with pytest.raises(ValueError, match="unknown key"):
        Settings(config_file=typo)


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1.2.3", "localhost", "::1", "[::1]"])
def test_auth_none_on_loopback_ok(host):
    assert Settings(auth="none", host=host).auth == "none"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com"])
def test_auth_none_off_loopback_rejected(host):
    with pytest.raises(ValueError, match="loopback"):
        Settings(auth="none", host=host)
    assert Settings(auth="sigv4", host=host).host == host


def test_invalid_values():
    with pytest.raises(ValueError):
        Settings(auth="basic")
    with pytest.raises(ValueError):
        Settings(port=70000)
    with pytest.raises(ValueError):
        Settings(account_id="123")
    with pytest.raises(ValueError):
        Settings(max_queue=0)
    with pytest.raises(ValueError, match="together"):
        Settings(access_key_id="AKID")


def test_helpers():
    assert parse_alias("anthropic.*=google.gemma-3-270m-v1:0") == (
        "anthropic.*",
        "google.gemma-3-270m-v1:0",
    )
    for bad in ("nope", "=x", "x="):
        with pytest.raises(ValueError):
            parse_alias(bad)
    assert is_loopback_host("localhost") and not is_loopback_host("10.0.0.1")


def test_data_dir_expands_user(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings(data_dir="~/od").data_dir == Path(tmp_path) / "od"
