"""The server's own SigV4 key pair, created once and kept in ``<data_dir>/credentials.json``."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import string
import tempfile
from pathlib import Path

__all__ = ["CREDENTIALS_FILE", "export_lines", "load_or_create_credentials"]

CREDENTIALS_FILE = "credentials.json"
_KEY_ALPHABET = string.ascii_uppercase + string.digits
# Same alphabet as AWS secrets (base64-ish), so clients that validate the format accept it.
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


def _new_credentials() -> tuple[str, str]:
    key = "AKIA" + "".join(secrets.choice(_KEY_ALPHABET) for _ in range(16))
    secret = "".join(secrets.choice(_SECRET_ALPHABET) for _ in range(40))
    return key, secret


def _create_private(path: Path, text: str) -> bool:
    """Atomically create ``path`` (mode 0600) with ``text``; ``False`` if it already exists.

    Written to a temp file, then hard-linked into place: readers never see a half-written file,
    and of two processes starting at once exactly one wins (``os.link`` refuses to overwrite).
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o600)  # mkstemp already uses 0600; be explicit about the contract
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        Path(tmp).unlink(missing_ok=True)


def _load(path: Path) -> tuple[str, str]:
    data = json.loads(path.read_text(encoding="utf-8"))
    return data["aws_access_key_id"], data["aws_secret_access_key"]


def load_or_create_credentials(data_dir: Path) -> tuple[str, str, bool]:
    """Return ``(access_key_id, secret_access_key, created)``, creating the file if absent."""
    path = Path(data_dir) / CREDENTIALS_FILE
    if path.exists():
        return *_load(path), False
    path.parent.mkdir(parents=True, exist_ok=True)
    key, secret = _new_credentials()
    body = {"aws_access_key_id": key, "aws_secret_access_key": secret}
    if not _create_private(path, json.dumps(body, indent=2) + "\n"):
        return *_load(path), False  # another process created it first
    return key, secret, True


def export_lines(endpoint: str, key: str, secret: str, region: str) -> str:
    """Shell ``export`` lines that point the AWS SDKs and CLI at this server."""
    pairs = (
        ("AWS_ENDPOINT_URL", endpoint),
        ("AWS_ACCESS_KEY_ID", key),
        ("AWS_SECRET_ACCESS_KEY", secret),
        ("AWS_REGION", region),
        ("AWS_DEFAULT_REGION", region),
    )
    return "\n".join(f"export {name}={shlex.quote(value)}" for name, value in pairs) + "\n"
