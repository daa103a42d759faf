"""The one typed settings object.

Values come from (highest priority first): explicit keyword arguments (what the CLI passes),
``OUTCROP_*`` environment variables, the optional TOML ``config_file``, then defaults.
Settings are read once, at start-up, and the resulting object is passed around; nothing else
in the package reads ``OUTCROP_*`` variables.

TOML config file layout (all keys optional; names are the field names below)::

    host = "127.0.0.1"
    port = 8000
    auth = "sigv4"
    max_queue = 64

    [aliases]
    "anthropic.claude-*" = "huggingface.smollm2-135m-instruct-v1:0"
    "*embed*" = "sentence-transformers.all-minilm-l6-v2-v1:0"
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

try:  # pydantic-settings >= 2.7: hand the raw env string to our validator.
    from pydantic_settings import NoDecode
except ImportError:  # pragma: no cover - older pydantic-settings JSON-decodes, also accepted
    NoDecode = None  # type: ignore[assignment,misc]

ENV_PREFIX = "OUTCROP_"

AliasList = list[tuple[str, str]]
_AliasField = Annotated[AliasList, NoDecode] if NoDecode is not None else AliasList


def default_data_dir() -> Path:
    """``$XDG_DATA_HOME/outcrop``, else ``~/.local/share/outcrop``."""
    xdg = os.environ.get("XDG_DATA_HOME")
    if xdg:
        return Path(xdg).expanduser() / "outcrop"
    return Path.home() / ".local" / "share" / "outcrop"


def parse_alias(text: str) -> tuple[str, str]:
    """Parse ``PATTERN=MODEL_ID`` (as given to ``--alias``) into a pair."""
    pattern, sep, model_id = text.partition("=")
    pattern, model_id = pattern.strip(), model_id.strip()
    if not sep or not pattern or not model_id:
        raise ValueError(f"alias {text!r} is not of the form PATTERN=MODEL_ID")
    return pattern, model_id


def _coerce_aliases(value: Any) -> AliasList:
    """Accept a mapping, a list of pairs / ``"p=id"`` strings, JSON, or ``"p=id,p2=id2"``."""
    if value is None:
        return []
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return []
        if text[0] in "[{":
            import json

            try:
                return _coerce_aliases(json.loads(text))
            except json.JSONDecodeError as exc:
                raise ValueError(f"aliases: invalid JSON: {exc}") from None
        return [parse_alias(part) for part in text.split(",") if part.strip()]
    if isinstance(value, dict):
        return [(str(k), str(v)) for k, v in value.items()]
    if isinstance(value, list | tuple):
        out: AliasList = []
        for item in value:
            if isinstance(item, str):
                out.append(parse_alias(item))
            elif isinstance(item, list | tuple) and len(item) == 2:
                out.append((str(item[0]), str(item[1])))
            elif isinstance(item, dict) and len(item) == 1:
                ((k, v),) = item.items()
                out.append((str(k), str(v)))
            else:
                raise ValueError(f"aliases: cannot interpret {item!r} as (pattern, model id)")
        return out
    raise ValueError(f"aliases: cannot interpret {value!r}")


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    h = host.strip().strip("[]").lower()
    if h in ("localhost", "localhost.", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


class _TomlFileSource(PydanticBaseSettingsSource):
    """Reads ``config_file`` (from init kwargs, else ``OUTCROP_CONFIG_FILE``) as TOML."""

    def __init__(self, settings_cls: type[BaseSettings], init_kwargs: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._init_kwargs = init_kwargs

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ does the work

    def _config_path(self) -> Path | None:
        path = self._init_kwargs.get("config_file")
        if path is None:
            path = os.environ.get(ENV_PREFIX + "CONFIG_FILE") or None
        return Path(path).expanduser() if path else None

    def __call__(self) -> dict[str, Any]:
        path = self._config_path()
        if path is None:
            return {}
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ValueError(f"config file not found: {path}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
        known = set(self.settings_cls.model_fields)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"config file {path}: unknown key(s) {', '.join(unknown)}; "
                f"known keys: {', '.join(sorted(known))}"
            )
        data.pop("config_file", None)
        return data


class Settings(BaseSettings):
    """Everything the server and CLI are configured by."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        extra="ignore",
        validate_default=True,
        frozen=True,
    )

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Field(default_factory=default_data_dir)
    aliases: _AliasField = Field(default_factory=list)
    """(glob pattern, model id) pairs; the first pattern that matches wins."""
    auth: Literal["sigv4", "none"] = "sigv4"
    region: str = "us-east-1"
    account_id: str = Field("000000000000", pattern=r"^\d{12}$")
    access_key_id: str | None = None
    secret_access_key: str | None = Field(None, repr=False)
    api_key: str | None = Field(None, repr=False)
    """Bedrock API key accepted as ``Authorization: Bearer <key>``."""
    max_queue: int = Field(64, ge=1)
    """Requests waiting per model before ThrottlingException."""
    max_batch: int = Field(32, ge=1)
    """Parallel decode slots per model (``--parallel``)."""
    n_threads: int | None = Field(None, ge=1)
    """CPU threads for inference; None = auto."""
    n_ctx: int = Field(2048, ge=256)
    """Context tokens per sequence (KV cache per slot)."""
    max_loaded_models: int = Field(3, ge=1)
    """Models kept loaded at once; the least recently used idle one is unloaded first."""
    memory_budget_mb: int | None = Field(None, ge=1)
    """Upper bound on the measured memory of loaded models; None = no budget."""
    keep_alive: float | None = Field(300.0)
    """Seconds an idle model stays loaded; None or a negative value = forever."""
    prefill_chunk: int = Field(64, ge=1)
    background_share: float = Field(0.125, ge=0.0, le=1.0)
    """While interactive requests run, the share of a model's slots that background work
    (batch records, async invokes) may keep, and the share it may add to each step's
    tokens; at least one of each, so a batch always moves."""
    prompt_cache_mb: int | None = Field(None, ge=0)
    """Host memory for saved prompt prefixes (KV state), shared by all loaded models;
    0 turns prefix reuse off; None = 1/16 of this machine's RAM, at most 4096."""
    gpu_layers: int = Field(0, ge=-1)
    """Layers llama.cpp offloads to a GPU (-1 = all); needs a llama-cpp-python built with
    CUDA / Metal / Vulkan (``CMAKE_ARGS="-DGGML_CUDA=on" pip install ...``)."""
    llama_log: bool = False
    """Print llama.cpp's own log (model loading, backend) to the server's output."""
    bench_instant_engine: bool = False
    """``outcrop bench`` only: answer from an instant fake engine to time the HTTP layer."""
    database_url: str | None = None
    """SQLAlchemy URL of the records database (``postgresql+psycopg://...`` when several
    servers share state); None = SQLite in ``<data_dir>/outcrop.db``."""
    s3_endpoint_url: str | None = None
    """S3-compatible endpoint for ``s3://`` data in customization jobs; None maps
    ``s3://bucket/key`` to ``<data_dir>/s3/bucket/key``."""
    model_bucket: str | None = None
    """``s3://BUCKET/PREFIX`` (on ``s3_endpoint_url``) holding custom and imported model
    files, so every server sharing the records can serve them (:mod:`outcrop.models.bucket`);
    None = model files stay on the node that made them."""
    training_threads: int = Field(1, ge=1)
    """torch threads per training worker (serving shares the same cores)."""
    import_delete_wait_s: float = Field(30.0, ge=0)
    """How long DeleteImportedModel waits for requests in flight before refusing."""
    weight_format: str = "auto"
    """GGUF weight format to serve: ``auto`` (convert a format that is slow on this CPU,
    quality-gated), ``original``, or a format such as ``q8_0`` / ``q4_0``
    (see :mod:`outcrop.models.formats`)."""
    file_roots: str | None = None
    """Folders (``os.pathsep``-separated) that ``file://`` job locations may use. Unset:
    anywhere on a loopback server, nowhere on one that listens beyond loopback."""
    config_file: Path | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        init_kwargs = getattr(init_settings, "init_kwargs", {}) or {}
        return (
            init_settings,
            env_settings,
            _TomlFileSource(settings_cls, dict(init_kwargs)),
        )

    @field_validator("aliases", mode="before")
    @classmethod
    def _aliases(cls, value: Any) -> AliasList:
        return _coerce_aliases(value)

    @field_validator("data_dir", "config_file", mode="after")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser() if value is not None else None

    @field_validator("weight_format", mode="before")
    @classmethod
    def _weight_format(cls, value: Any) -> str:
        from outcrop.models.formats import check_format

        return check_format(str(value))

    @field_validator("model_bucket", mode="after")
    @classmethod
    def _model_bucket(cls, value: str | None) -> str | None:
        if not value:
            return None
        from outcrop.models.bucket import parse_bucket_uri

        parse_bucket_uri(value)
        return value

    @field_validator("access_key_id", "secret_access_key", "api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.auth == "none" and not is_loopback_host(self.host):
            raise ValueError(
                f"auth='none' is only allowed on a loopback host, not {self.host!r}: "
                "anyone who can reach the port could use the server. "
                "Bind to 127.0.0.1 or use auth='sigv4'."
            )
        if (self.access_key_id is None) != (self.secret_access_key is None):
            raise ValueError(
                "OUTCROP_ACCESS_KEY_ID and OUTCROP_SECRET_ACCESS_KEY must be set together"
            )
        return self

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def file_root_paths(self) -> tuple[Path, ...] | None:
        """Where ``file://`` may go (see :data:`outcrop.locations.FileRoots`)."""
        if self.file_roots:
            parts = self.file_roots.split(os.pathsep)
            return tuple(Path(p).expanduser() for p in parts if p.strip())
        return None if self.is_loopback else ()
