"""Events recorded before activations, grants, revocations and role deletions took a reason: their
payloads have no `reason`, and they still replay (the event classes give it a default, ""), through the
in-memory fake as through the store's own `reconstruct`. Commands then go on from them as usual."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest

from application.context import CommandContext, CommandResult
from application.identity.handlers import HANDLERS, ActivateUser, DeleteRole, EnsureBuiltins, GrantRole, IdentityServices, RevokeRole
from application.ports import StoredEvent
from domain.identity.access import Grant
from domain.identity.errors import RoleNotFound
from domain.identity.role import Role, role_uuid
from domain.identity.user import User
from infrastructure.eventlog.repository import reconstruct
from tests.unit.fakes import FakePasswords, MemoryRepository

SYSTEM = CommandContext()
USER_ID = str(uuid4())
USER_STREAM = f"user:{USER_ID}"
REGISTERED = dict(email="ada@example.com", full_name="Ada", password_hash="hashed:long enough", active=False)

# a user's stream as Charter recorded it before reasons: no `reason` in any of these payloads
OLD_USER_EVENTS: list[tuple[str, dict[str, Any], str | None]] = [
    ("Registered", REGISTERED, None),
    ("RoleGranted", dict(role="auditor", site_id="site-a"), "site-a"),
    ("Activated", {}, None),
    ("RoleGranted", dict(role="viewer", site_id=None), None),
    ("RoleRevoked", dict(role="viewer", site_id=None), None),
]
OLD_ROLE_EVENTS: list[tuple[str, dict[str, Any], str | None]] = [
    ("Created", dict(key="editors", name="editors", description="", permissions=["plugins:read"]), None),
    ("Deleted", {}, None),
]


@pytest.fixture
async def repo() -> MemoryRepository:
    return MemoryRepository()


@pytest.fixture
async def services(repo: MemoryRepository) -> IdentityServices:
    services = IdentityServices(repository=repo, passwords=FakePasswords(), email_key=b"k" * 32)
    await run(services, EnsureBuiltins())
    for name, payload, site_id in OLD_USER_EVENTS:
        repo.given_recorded(USER_STREAM, name, payload, site_id)
    for name, payload, site_id in OLD_ROLE_EVENTS:
        repo.given_recorded("role:editors", name, payload, site_id)
    return services


async def run(services: IdentityServices, command: Any, ctx: CommandContext = SYSTEM) -> CommandResult:
    return await HANDLERS[type(command)](command, ctx, services)


def stored(stream_id: str, events: list[tuple[str, dict[str, Any], str | None]], aggregate: str) -> list[StoredEvent]:
    """The rows the event store would read back for `events`."""
    now = datetime.now(timezone.utc)
    return [
        StoredEvent(
            position=n, transaction_id=n, event_id=uuid4(), stream_id=stream_id, stream_type=stream_id.split(":", 1)[0],
            stream_version=n, event_type=f"{aggregate}.{name}", schema_version=1, payload=dict(payload), metadata={},
            site_id=site_id, recorded_at=now, hash=b"",
        )
        for n, (name, payload, site_id) in enumerate(events, start=1)
    ]


class TestTheStoreReplaysThem:
    def test_a_user_with_grants_revocations_and_an_activation_without_reasons(self) -> None:
        user = reconstruct(User, UUID(USER_ID), stored(USER_STREAM, OLD_USER_EVENTS, "User"))

        assert user.active and user.grants == [Grant("auditor", "site-a")]
        assert user.version == len(OLD_USER_EVENTS)

    def test_a_role_deleted_without_a_reason(self) -> None:
        role = reconstruct(Role, role_uuid("editors"), stored("role:editors", OLD_ROLE_EVENTS, "Role"))

        assert role.deleted


class TestCommandsGoOnFromThem:
    async def test_a_revocation_with_a_reason_follows_old_grants(self, services, repo) -> None:
        await run(services, RevokeRole(user_id=USER_ID, role="auditor", site_id="site-a", reason="left the audit team"))

        assert repo.new_events() == [(USER_STREAM, "RoleRevoked", dict(role="auditor", site_id="site-a", reason="left the audit team"))]
        assert repo.recorded(USER_STREAM)[-1].version == len(OLD_USER_EVENTS) + 1

    async def test_a_grant_with_a_reason_follows_an_old_revocation(self, services, repo) -> None:
        await run(services, GrantRole(user_id=USER_ID, role="viewer", reason="read-only again"))

        assert repo.new_events() == [(USER_STREAM, "RoleGranted", dict(role="viewer", site_id=None, reason="read-only again"))]

    async def test_an_old_activation_leaves_the_user_active(self, services, repo) -> None:
        await run(services, ActivateUser(user_id=USER_ID, reason="twice"))

        assert repo.new_events() == []

    async def test_a_role_deleted_without_a_reason_stays_deleted(self, services, repo) -> None:
        with pytest.raises(RoleNotFound):
            await run(services, DeleteRole(role_id="editors", reason="again"))
        with pytest.raises(RoleNotFound):
            await run(services, GrantRole(user_id=USER_ID, role="editors"))

        assert repo.new_events() == []
