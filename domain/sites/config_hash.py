"""The configuration hash: what a signoff approves, recomputable by anyone from an export.

Recipe (`configuration_hash`):
1. Every secret value (a location the plugin's schema marks secret, or one sealed before) is replaced by
   the string `"hmac-sha256:" + hex(HMAC-SHA256(key, canonical(value)))`, where `key` is the server's
   configuration-hash key: a secret cannot be guessed from the hash, and changing it changes the hash.
2. `canonical(x)` is JSON with keys sorted, no whitespace (`,` and `:` as separators), UTF-8, non-ASCII
   characters written as themselves (not `\\uXXXX`), no NaN or infinity.
3. The hash is `"sha256:" + hex(SHA-256(canonical(configuration with secrets replaced)))`.

An export lists each secret already replaced as in step 1, so steps 2 and 3 recompute the hash without
the key. Fixed vector (tests/unit/sites/test_config_hash.py, README "Sites"): key `b"k" * 32`,
configuration `{"endpoint": "https://erp.example", "token": "s3cret", "retries": 3}` with `token` secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable
from typing import Any

from domain.plugins.configuration import Location, map_locations

SECRET_PREFIX = "hmac-sha256:"
HASH_PREFIX = "sha256:"


def canonical(value: Any) -> bytes:
    """Canonical JSON: sorted keys, no insignificant whitespace, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def secret_digest(key: bytes, value: Any) -> str:
    """What stands for a secret value in the hashed form."""
    return SECRET_PREFIX + hmac.new(key, canonical(value), hashlib.sha256).hexdigest()


def hashed_form(config: dict[str, Any], secrets: Iterable[Location], key: bytes) -> dict[str, Any]:
    """The configuration as hashed (and as exported): each secret replaced by its keyed digest."""
    return map_locations(config, secrets, lambda _path, value: secret_digest(key, value))


def digest_of(hashed: dict[str, Any]) -> str:
    """The hash of a configuration already in hashed form (what an auditor runs on an export)."""
    return HASH_PREFIX + hashlib.sha256(canonical(hashed)).hexdigest()


def configuration_hash(config: dict[str, Any], secrets: Iterable[Location], key: bytes) -> str:
    """The hash of a configuration in clear, `secrets` naming the locations of its secret values."""
    return digest_of(hashed_form(config, secrets, key))
