"""What the sites feature needs from the outside world."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable


class Reauthentication(Protocol):
    """Proof, at the moment of signing, that the signer is who the session says (21 CFR 11.200): their
    password, or an access token of theirs issued less than five minutes ago. Raises
    `domain.sites.errors.ReauthenticationFailed` otherwise (never saying which part was wrong)."""

    async def confirm(self, user_id: str, password: str | None, access_token: str | None) -> None: ...


@dataclass(frozen=True)
class ArchivedReport:
    """A compliance report kept by a task run (`reports.compliance`): what it covers and its bytes' digest
    (the report's own sha256, printed in it)."""

    id: str
    site_id: str
    format: str
    as_of: str
    position: int
    sha256: str
    size: int
    task_id: str | None
    run_id: str | None
    created_at: datetime


@runtime_checkable
class ReportArchive(Protocol):
    """Reports kept for later, per site (shared by every replica)."""

    async def page(self, site_id: str, skip: int, limit: int) -> tuple[int, list[ArchivedReport]]: ...

    async def document(self, site_id: str, report_id: str) -> tuple[ArchivedReport, bytes] | None: ...
