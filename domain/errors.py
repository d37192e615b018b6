"""Domain errors: each carries a stable code; the HTTP layer maps codes to statuses."""

from __future__ import annotations

import re
from typing import Any


class DomainError(Exception):
    """A rule of the domain refused a command."""

    code = "DOMAIN_RULE_VIOLATED"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


def field_of(message: str) -> str | None:
    """The dotted field a msgspec validation message is about (`$.a.b`, a missing or an unknown field)."""
    at = re.search(r"(?:at|in) `\$((?:\.[^`.\[]+|\[\d+\]|\[\.\.\.\])*)`", message)
    # `[...]`: a value of a mapping, whose key msgspec does not say: the mapping is named
    path = [p for p in re.split(r"\.|\[|\]", at.group(1)) if p and p != "..."] if at else []
    named = re.search(r"(?:missing required|unknown) field `([^`]*)`", message)
    if named:
        path.append(named.group(1))
    return ".".join(path) or None
