"""Identity command handlers against an in-memory repository (no I/O): e-mail reservations, the last
administrator (also when two administrators are removed at once), grants by site admins, create-admin."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest

from application.context import CommandContext, CommandResult
from application.errors import ConcurrencyError
from application.identity.handlers import HANDLERS, ActivateUser, DeactivateUser, EnsureAdmin, EnsureBuiltins, GrantRole, IdentityServices, RegisterUser, RevokeRole, find_user_id
from domain.identity.errors import UserExists
from application.ports import AppendResult
from application.unit import Loaded
from domain.identity.access import BUILTIN_ROLES, Grant, resolve_access
from domain.identity.errors import EscalationForbidden, UserProtected
from domain.identity.errors import LastAdmin
from domain.identity.user import User

SYSTEM = CommandContext()


class MemoryRepository:
    """Streams of event objects; `save_all` appends to all streams or, on any stale version, to none.
    Every load and save yields to the event loop, so concurrent commands interleave as they would."""

    def __init__(self) -> None:
        self.streams: dict[str, list[Any]] = {}

    def new(self, stream_type: str, key: str) -> Loaded[Any]:
        return Loaded(None, f"{stream_type}:{key}", stream_type, 0, b"")

    async def load(self, aggregate_cls: type, stream_type: str, key: str, aggregate_id: UUID) -> Loaded[Any]:
        await asyncio.sleep(0)
        stream_id = f"{stream_type}:{key}"
        aggregate = None
        for event in self.streams.get(stream_id, []):
            aggregate = event.mutate(aggregate)
        return Loaded(aggregate, stream_id, stream_type, len(self.streams.get(stream_id, [])), b"")

    async def save(self, loaded: Loaded[Any], metadata: dict[str, Any], idempotency: Any = None, site_id: str | None = None) -> AppendResult:
        return (await self.save_all([(loaded, site_id)], metadata, idempotency))[0]

    async def save_all(self, items: list[tuple[Loaded[Any], str | None]], metadata: dict[str, Any], idempotency: Any = None) -> list[AppendResult]:
        await asyncio.sleep(0)
        pending = [(loaded, loaded.aggregate.collect_events() if loaded.aggregate else []) for loaded, _ in items]
        for loaded, events in pending:
            current = len(self.streams.get(loaded.stream_id, []))
            if events and current != loaded.version:
                raise ConcurrencyError(loaded.stream_id, loaded.version, current)
        for loaded, events in pending:
            self.streams.setdefault(loaded.stream_id, []).extend(events)
        return [AppendResult(l.stream_id, l.version + len(e), 1 if e else None) for l, e in pending]


class Passwords:
    async def hash(self, password: str) -> str:
        return f"hashed:{password}"

    async def verify(self, password_hash: str, password: str) -> bool:
        return password_hash == f"hashed:{password}"


class Roles:
    async def key_of(self, name_or_key: str) -> str | None:
        return name_or_key if name_or_key in BUILTIN_ROLES else None


@pytest.fixture
async def services() -> IdentityServices:
    services = IdentityServices(repository=MemoryRepository(), passwords=Passwords(), roles=Roles(), email_key=b"k" * 32)
    await run(services, EnsureBuiltins())
    return services


async def run(services: IdentityServices, command: Any, ctx: CommandContext = SYSTEM) -> CommandResult:
    return await HANDLERS[type(command)](command, ctx, services)


async def register(services: IdentityServices, email: str, *grants: tuple[str, str | None]) -> str:
    result = await run(services, RegisterUser(email=email, password="long enough"))
    user_id = result.stream_id.split(":", 1)[1]
    for role, site in grants:
        await run(services, GrantRole(user_id=user_id, role=role, site_id=site))
    return user_id


async def user(services: IdentityServices, user_id: str) -> User:
    loaded = await services.repository.load(User, "user", user_id, UUID(user_id))
    return loaded.aggregate


def as_holder(*grants: tuple[str, str | None]) -> CommandContext:
    roles = {name: permissions for name, (_, permissions) in BUILTIN_ROLES.items()}
    return CommandContext(actor="caller", access=resolve_access("caller", [Grant(r, s) for r, s in grants], roles))


class TestRegisterUser:
    async def test_gives_a_random_id_and_reserves_the_address(self, services) -> None:
        user_id = await register(services, "Alice@Example.com")

        assert UUID(user_id).version == 4
        assert await find_user_id(services, "alice@example.com") == user_id
        assert await find_user_id(services, "bob@example.com") is None

    async def test_rejects_an_address_taken_in_another_case(self, services) -> None:
        await register(services, "alice@example.com")

        with pytest.raises(UserExists):
            await register(services, " ALICE@example.com")

    async def test_two_registrations_at_once_leave_one_user(self, services) -> None:
        outcomes = await asyncio.gather(
            register(services, "carol@example.com"), register(services, "carol@example.com"), return_exceptions=True
        )

        assert sorted(type(o).__name__ for o in outcomes) == ["UserExists", "str"]
        assert len([s for s in services.repository.streams if s.startswith("user:")]) == 1


class TestLastAdmin:
    async def test_rejects_deactivating_the_last_administrator(self, services) -> None:
        admin = await register(services, "root@example.com", ("admin", None))

        with pytest.raises(LastAdmin):
            await run(services, DeactivateUser(user_id=admin))

        assert (await user(services, admin)).active

    async def test_rejects_revoking_admin_from_the_last_administrator(self, services) -> None:
        admin = await register(services, "root@example.com", ("admin", None))

        with pytest.raises(LastAdmin):
            await run(services, RevokeRole(user_id=admin, role="admin"))

    async def test_an_administrator_may_go_while_another_remains(self, services) -> None:
        first = await register(services, "a@example.com", ("admin", None))
        await register(services, "b@example.com", ("admin", None))

        await run(services, DeactivateUser(user_id=first))

        assert not (await user(services, first)).active

    async def test_admin_at_a_site_or_inactive_does_not_count(self, services) -> None:
        admin = await register(services, "root@example.com", ("admin", None))
        other = await register(services, "site@example.com", ("admin", "site-a"))
        await run(services, DeactivateUser(user_id=other))

        with pytest.raises(LastAdmin):
            await run(services, RevokeRole(user_id=admin, role="admin"))

    async def test_reactivating_an_administrator_counts_them_again(self, services) -> None:
        first = await register(services, "a@example.com", ("admin", None))
        second = await register(services, "b@example.com", ("admin", None))
        await run(services, DeactivateUser(user_id=first))
        await run(services, ActivateUser(user_id=first))

        await run(services, DeactivateUser(user_id=second))

        assert (await user(services, first)).is_admin

    async def test_two_administrators_deactivating_each_other_at_once_leave_one(self, services) -> None:
        first = await register(services, "a@example.com", ("admin", None))
        second = await register(services, "b@example.com", ("admin", None))

        outcomes = await asyncio.gather(
            run(services, DeactivateUser(user_id=first)), run(services, DeactivateUser(user_id=second)),
            return_exceptions=True,
        )

        assert sum(isinstance(o, LastAdmin) for o in outcomes) == 1, outcomes
        assert [(await user(services, u)).is_admin for u in (first, second)].count(True) == 1

    async def test_revoking_and_deactivating_the_two_administrators_at_once_leaves_one(self, services) -> None:
        first = await register(services, "a@example.com", ("admin", None))
        second = await register(services, "b@example.com", ("admin", None))

        outcomes = await asyncio.gather(
            run(services, RevokeRole(user_id=first, role="admin")), run(services, DeactivateUser(user_id=second)),
            return_exceptions=True,
        )

        assert sum(isinstance(o, LastAdmin) for o in outcomes) == 1, outcomes
        assert [(await user(services, u)).is_admin for u in (first, second)].count(True) == 1


class TestGrantBySiteAdmin:
    async def test_rejects_granting_admin_at_their_site(self, services) -> None:
        target = await register(services, "t@example.com")

        with pytest.raises(EscalationForbidden):
            await run(services, GrantRole(user_id=target, role="admin", site_id="site-a"), as_holder(("admin", "site-a")))

        assert (await user(services, target)).grants == []

    async def test_rejects_changing_a_user_who_holds_a_global_role(self, services) -> None:
        target = await register(services, "t@example.com", ("viewer", None))
        site_admin = as_holder(("admin", "site-a"))

        for command in (
            GrantRole(user_id=target, role="viewer", site_id="site-a"),
            DeactivateUser(user_id=target),
        ):
            with pytest.raises(UserProtected):
                await run(services, command, site_admin)

    async def test_grants_roles_within_their_site(self, services) -> None:
        target = await register(services, "t@example.com")

        await run(services, GrantRole(user_id=target, role="auditor", site_id="site-a"), as_holder(("admin", "site-a")))

        assert (await user(services, target)).grants == [Grant("auditor", "site-a")]


class TestEnsureAdmin:
    async def test_registers_a_new_administrator(self, services) -> None:
        result = await run(services, EnsureAdmin(email="root@example.com", password="long enough"))

        admin = await user(services, result.stream_id.split(":", 1)[1])
        assert admin.is_admin and admin.email == "root@example.com"

    async def test_repairs_an_existing_account(self, services) -> None:
        first = await register(services, "root@example.com", ("admin", None))
        await register(services, "other@example.com", ("admin", None))
        await run(services, RevokeRole(user_id=first, role="admin"))
        await run(services, DeactivateUser(user_id=first))

        await run(services, EnsureAdmin(email="root@example.com", password="a new password"))

        repaired = await user(services, first)
        assert repaired.is_admin and repaired.password_hash == "hashed:a new password"

    async def test_keeps_the_password_when_none_is_given(self, services) -> None:
        first = await register(services, "root@example.com")

        await run(services, EnsureAdmin(email="root@example.com"))

        assert (await user(services, first)).password_hash == "hashed:long enough"

    async def test_without_repair_leaves_an_existing_account_alone(self, services) -> None:
        first = await register(services, "root@example.com")

        await run(services, EnsureAdmin(email="root@example.com", password="long enough", repair=False))

        assert not (await user(services, first)).is_admin
