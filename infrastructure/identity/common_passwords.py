"""The list of common passwords shipped with Charter (common_passwords.txt, its source named at its top),
read once, lower-cased, for the password policy (domain/identity/passwords.py)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def common_passwords() -> frozenset[str]:
    text = (resources.files("infrastructure.identity") / "common_passwords.txt").read_text(encoding="utf-8")
    return frozenset(
        line.strip().casefold() for line in text.splitlines() if line.strip() and not line.startswith("#")
    )
