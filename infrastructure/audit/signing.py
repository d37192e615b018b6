"""The sealer's Ed25519 key: made on first start into a key file (mode 0600), never in the database, an
event, a log line or a response. Only its public half leaves (`GET /api/v1/audit/public-key`).

Why a file and not the database: whoever can rewrite the events table (a database superuser) could then
also read the key and sign forged checkpoints. Every replica that seals must read the same file (as with
CHARTER_SECRET_KEY); a checkpoint names the fingerprint of the key that signed it.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from infrastructure.files import create_once

KEY_FILE = "audit-ed25519.pem"


def fingerprint(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def public_pem(public: Ed25519PublicKey) -> str:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public_key(pem: bytes) -> Ed25519PublicKey:
    """A public key from PEM (a private key's file is accepted too: its public half is used)."""
    if b"PRIVATE KEY" in pem:
        key = serialization.load_pem_private_key(pem, password=None)
        if isinstance(key, Ed25519PrivateKey):
            return key.public_key()
        raise ValueError("not an Ed25519 key")
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


def verify(public: Ed25519PublicKey, signature_b64: str, message: bytes) -> bool:
    try:
        public.verify(base64.b64decode(signature_b64, validate=True), message)
    except (InvalidSignature, ValueError):
        return False
    return True


class Signer:
    """Signs checkpoints with the private key; knows its public half."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.fingerprint = fingerprint(self.public)
        self.public_pem = public_pem(self.public)

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._private.sign(message)).decode()

    def __repr__(self) -> str:  # never the private key, whatever prints this
        return f"Signer({self.fingerprint})"

    @classmethod
    def load_or_create(cls, path: Path) -> "Signer":
        """The key in `path`, made there (0600) when absent: created whole or not at all, so two starting
        workers or replicas agree on one key and neither reads the other's half-written file."""
        if not path.exists():
            pem = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            create_once(path, pem)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SystemExit(f"{path} holds no Ed25519 private key (CHARTER_AUDIT_KEY_PATH)")
        return cls(key)
