"""How a plugin's stored configuration is shown to readers: every sealed value masked, or opened for a
caller allowed to read secrets. The read side never decides this itself, and never holds the cipher."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from application.ports import SecretCipher
from domain.plugins.configuration import MASK, map_sealed, path_of, sealed_locations, secret_paths


@dataclass(frozen=True)
class ShownConfig:
    config: dict[str, Any]
    secrets: list[str]  # fields the schema marks secret (`*`: any key or index)
    sealed: list[str]  # fields sealed in this configuration (what `config/declassify` can name)


def masked(stored: dict[str, Any]) -> dict[str, Any]:
    """A stored configuration as readers see it: every sealed value masked, whatever the schema says now
    (a field once secret stays sealed until declassified)."""
    return map_sealed(stored, lambda _path, _value: MASK)


class ConfigDisclosure:
    def __init__(self, cipher: SecretCipher) -> None:
        self.cipher = cipher

    def masked(self, stored: dict[str, Any]) -> dict[str, Any]:
        return masked(stored)

    def show(self, stored: dict[str, Any], schema: dict[str, Any], include_secrets: bool) -> ShownConfig:
        """`stored` masked, or in clear when `include_secrets` (the caller's permission is checked before)."""
        if include_secrets:
            config = map_sealed(stored, lambda _path, value: self.cipher.unseal(value))
        else:
            config = masked(stored)
        return ShownConfig(config, secret_paths(schema), [path_of(loc) for loc in sealed_locations(stored)])
