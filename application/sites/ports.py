"""What the sites feature needs from the outside world."""

from __future__ import annotations

from typing import Protocol


class Reauthentication(Protocol):
    """Proof, at the moment of signing, that the signer is who the session says (21 CFR 11.200): their
    password, or an access token of theirs issued less than five minutes ago. Raises
    `domain.sites.errors.ReauthenticationFailed` otherwise (never saying which part was wrong)."""

    async def confirm(self, user_id: str, password: str | None, access_token: str | None) -> None: ...
