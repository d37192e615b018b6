"""In-memory fakes of the identity ports (no I/O): a repository of event lists, password hashes that are
plain prefixes, a token signer, a refresh-token store with rotation and reuse detection, a throttle and an
access cache that record what they were told."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from application.errors import ConcurrencyError
from application.identity.handlers import IdentityServices
from application.identity.signin import AuthenticationFailed, RefreshTokenReused
from application.ports import AppendResult, Attempt, Idempotency, RefreshGrant
from application.unit import Loaded


class InMemoryRepository:
    """Streams as lists of domain events; a save checks each stream's expected version, all or none."""

    def __init__(self) -> None:
        self.streams: dict[str, list[Any]] = {}
        self.position = 0

    def new(self, stream_type: str, key: str) -> Loaded[Any]:
        return Loaded(None, f"{stream_type}:{key}", stream_type, 0, b"")

    async def load(self, aggregate_cls: type, stream_type: str, key: str, aggregate_id: Any) -> Loaded[Any]:
        stream_id = f"{stream_type}:{key}"
        aggregate = None
        events = self.streams.get(stream_id, [])
        for event in events:
            aggregate = event.mutate(aggregate)
        return Loaded(aggregate, stream_id, stream_type, len(events), b"")

    async def save(self, loaded: Loaded[Any], metadata: dict[str, Any], idempotency: Idempotency | None = None, site_id: str | None = None) -> AppendResult:
        return (await self.save_all([(loaded, site_id)], metadata, idempotency))[0]

    async def save_all(self, items: list[tuple[Loaded[Any], str | None]], metadata: dict[str, Any], idempotency: Idempotency | None = None) -> list[AppendResult]:
        for loaded, _ in items:
            current = len(self.streams.get(loaded.stream_id, []))
            if current != loaded.version:
                raise ConcurrencyError(loaded.stream_id, loaded.version, current)
        results = []
        for loaded, _ in items:
            events = loaded.aggregate.collect_events() if loaded.aggregate is not None else []
            stream = self.streams.setdefault(loaded.stream_id, [])
            stream.extend(events)
            self.position += len(events)
            results.append(AppendResult(loaded.stream_id, len(stream), self.position if events else None))
        return results


@dataclass
class FakePasswords:
    verified: list[tuple[str, str]] = field(default_factory=list)

    async def hash(self, password: str) -> str:
        return f"hashed:{password}"

    async def verify(self, password_hash: str, password: str) -> bool:
        self.verified.append((password_hash, password))
        return password_hash == f"hashed:{password}"


@dataclass
class FakeTokens:
    issuer: str = "charter"
    issued: list[dict[str, Any]] = field(default_factory=list)

    def issue(self, subject: str, grants: list[tuple[str, str | None]], name: str | None = None, session: str | None = None) -> tuple[str, int]:
        self.issued.append({"subject": subject, "grants": grants, "name": name, "session": session})
        return f"access-{len(self.issued)}", 900

    def issue_password_change(self, subject: str) -> tuple[str, int]:
        self.issued.append({"subject": subject, "purpose": "password-change"})
        return f"password-change-{len(self.issued)}", 300


@dataclass
class Issued:
    user_id: str
    family_id: str
    rotated: bool = False
    revoked: bool = False


class FakeRefreshTokens:
    def __init__(self) -> None:
        self.tokens: dict[str, Issued] = {}
        self._numbers = itertools.count(1)

    async def issue(self, user_id: str, family_id: str | None = None, client: Any = None) -> str:
        token = f"refresh-{next(self._numbers)}"
        self.tokens[token] = Issued(user_id, family_id or f"family-{token}")
        return token

    async def rotate(self, token: str) -> tuple[RefreshGrant, str]:
        found = self.tokens.get(token)
        if found is None:
            raise AuthenticationFailed("refresh token unknown", "REFRESH_TOKEN_INVALID")
        if found.revoked:
            raise AuthenticationFailed("refresh token revoked", "REFRESH_TOKEN_REVOKED")
        if found.rotated:
            await self.revoke_family(found.family_id)
            raise RefreshTokenReused(found.family_id)
        found.rotated = True
        return RefreshGrant(found.user_id, found.family_id), await self.issue(found.user_id, found.family_id)

    async def revoke(self, token: str) -> str | None:
        found = self.tokens.get(token)
        if found is None:
            return None
        await self.revoke_family(found.family_id)
        return found.family_id

    async def revoke_family(self, family_id: str) -> None:
        for issued in self.tokens.values():
            if issued.family_id == family_id:
                issued.revoked = True

    async def revoke_user(self, user_id: str, keep: str | None = None) -> list[str]:
        ended = set()
        for issued in self.tokens.values():
            if issued.user_id == user_id and issued.family_id != keep and not issued.revoked:
                issued.revoked = True
                ended.add(issued.family_id)
        return sorted(ended)

    async def owner(self, session_id: str) -> str | None:
        live = [i for i in self.tokens.values() if i.family_id == session_id and not (i.revoked or i.rotated)]
        return live[0].user_id if live else None

    def live(self, family_id: str) -> list[str]:
        """Tokens of the sign-in that a refresh would still accept."""
        return [t for t, i in self.tokens.items() if i.family_id == family_id and not (i.revoked or i.rotated)]


@dataclass
class FakeThrottle:
    wait: int = 0
    attempts: list[tuple[str, str]] = field(default_factory=list)
    succeeded_with: list[Attempt] = field(default_factory=list)

    async def attempt(self, account: str, address: str) -> Attempt:
        self.attempts.append((account, address))
        return Attempt((account, address), self.wait)

    async def succeeded(self, attempt: Attempt) -> None:
        self.succeeded_with.append(attempt)


@dataclass
class FakeFailures:
    """The security log: what failed, why."""

    recorded: list[tuple[str, str | None, str]] = field(default_factory=list)

    async def failed(self, account: str, user_id: str | None, client: Any, reason: str) -> None:
        self.recorded.append((account, user_id, reason))


@dataclass
class FakeAccessCache:
    calls: list[tuple[Any, ...]] = field(default_factory=list)

    def granted(self, user_id: str, role: str, site_id: str | None) -> None:
        self.calls.append(("granted", user_id, role, site_id))

    def revoked(self, user_id: str, role: str, site_id: str | None) -> None:
        self.calls.append(("revoked", user_id, role, site_id))

    def activated(self, user_id: str) -> None:
        self.calls.append(("activated", user_id))

    def deactivated(self, user_id: str) -> None:
        self.calls.append(("deactivated", user_id))

    def role_changed(self, role: str, permissions: list[str] | None) -> None:
        self.calls.append(("role_changed", role, permissions))

    def end_sessions(self, *session_ids: str | None) -> None:
        self.calls.append(("end_sessions", *session_ids))


def identity_services(repository: Any) -> IdentityServices:
    return IdentityServices(repository=repository, passwords=FakePasswords(), email_key=b"k" * 32)
