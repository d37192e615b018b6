"""Sealing of secret configuration values (Fernet: AES-128-CBC + HMAC-SHA256) before they reach the log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from domain.plugins.configuration import SEALED
from infrastructure.files import create_once


class FernetCipher:
    def __init__(self, key: str | bytes) -> None:
        self._fernet = Fernet(key)

    def seal(self, value: Any) -> dict[str, str]:
        return {SEALED: self._fernet.encrypt(msgspec.json.encode(value)).decode()}

    def unseal(self, sealed: dict[str, str]) -> Any:
        try:
            return msgspec.json.decode(self._fernet.decrypt(sealed[SEALED].encode()))
        except InvalidToken:
            raise ValueError("a sealed secret cannot be opened with the configured CHARTER_SECRET_KEY") from None


IDEMPOTENCY_FINGERPRINT = b"charter idempotency fingerprint"


def derive_key(secret: str, purpose: bytes) -> bytes:
    """A 32-byte key for one `purpose`, derived from the server secret (HKDF-SHA256, the purpose as its
    info), so no two uses share a key and none reveals the secret."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret.encode())


def load_or_create_key(configured: str | None, data_dir: Path) -> str:
    """The configured key, or one kept in `<data_dir>/secret.key` (created on first use, mode 0600)."""
    if configured:
        return configured
    path = data_dir / "secret.key"
    if not path.exists():
        create_once(path, Fernet.generate_key())  # whole or not at all: racing processes agree on one key
    return path.read_text().strip()
