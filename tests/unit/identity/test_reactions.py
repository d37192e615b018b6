"""After-commit reactions (application/bus.py `Reactions`, `ReactingRepository`; the identity table in
application/identity/reactions.py): given a committed command → what the refresh-token store and the
access cache were told. Nothing runs for a refused command or an append answered as a duplicate."""

from __future__ import annotations

from typing import Any

import pytest

from application.bus import ReactingRepository, Reactions
from application.context import CommandContext
from application.errors import ConcurrencyError
from application.identity import handlers as h
from application.identity.reactions import REACTIONS, AccessServices
from application.ports import AppendResult
from domain.identity.errors import GrantNotHeld
from domain.identity.role import Role
from domain.identity.user import User
from tests.unit.identity.sign_in_fakes import FakeAccessCache, FakeRefreshTokens, InMemoryRepository, identity_services

SYSTEM = CommandContext()


class World:
    def __init__(self, inner: Any = None) -> None:
        self.store = inner or InMemoryRepository()
        self.reactions = Reactions()
        self.refresh_tokens = FakeRefreshTokens()
        self.cache = FakeAccessCache()
        self.reactions.register(REACTIONS, AccessServices(self.refresh_tokens, self.cache))
        self.identity = identity_services(ReactingRepository(self.store, self.reactions))

    async def user(self, email: str = "ada@example.com") -> str:
        result = await h.register_user(h.RegisterUser(email=email, password="long enough"), SYSTEM, self.identity)
        return result.stream_id.split(":", 1)[1]

    async def role(self, name: str = "reviewer", permissions: list[str] | None = None) -> None:
        await h.create_role(h.CreateRole(name=name, permissions=permissions or ["plugins:read"]), SYSTEM, self.identity)
        self.cache.calls.clear()


@pytest.fixture
def world() -> World:
    return World()


class TestUsers:
    async def test_a_deactivation_revokes_the_users_refresh_tokens_and_ends_its_access(self, world: World) -> None:
        user_id = await world.user()
        other = await world.user("bob@example.com")
        mine = await world.refresh_tokens.issue(user_id)
        theirs = await world.refresh_tokens.issue(other)

        await h.deactivate_user(h.DeactivateUser(user_id=user_id, reason="left"), SYSTEM, world.identity)

        assert world.refresh_tokens.tokens[mine].revoked and not world.refresh_tokens.tokens[theirs].revoked
        assert world.cache.calls == [("deactivated", user_id)]

    async def test_deactivating_an_inactive_user_records_nothing_and_runs_nothing(self, world: World) -> None:
        user_id = await world.user()
        await h.deactivate_user(h.DeactivateUser(user_id=user_id), SYSTEM, world.identity)
        world.cache.calls.clear()

        await h.deactivate_user(h.DeactivateUser(user_id=user_id), SYSTEM, world.identity)

        assert world.cache.calls == []

    async def test_an_activation_lets_the_user_in_again(self, world: World) -> None:
        user_id = await world.user()
        await h.deactivate_user(h.DeactivateUser(user_id=user_id), SYSTEM, world.identity)

        await h.activate_user(h.ActivateUser(user_id=user_id), SYSTEM, world.identity)

        assert world.cache.calls[-1] == ("activated", user_id)

    async def test_a_grant_reaches_the_cache_with_the_roles_key_and_site(self, world: World) -> None:
        user_id = await world.user()
        await world.role()

        await h.grant_role(h.GrantRole(user_id=user_id, role="reviewer", site_id="lyon"), SYSTEM, world.identity)

        assert world.cache.calls == [("granted", user_id, "reviewer", "lyon")]

    async def test_a_revocation_reaches_the_cache(self, world: World) -> None:
        user_id = await world.user()
        await world.role()
        await h.grant_role(h.GrantRole(user_id=user_id, role="reviewer"), SYSTEM, world.identity)

        await h.revoke_role(h.RevokeRole(user_id=user_id, role="reviewer"), SYSTEM, world.identity)

        assert world.cache.calls[-1] == ("revoked", user_id, "reviewer", None)

    async def test_a_refused_command_runs_nothing(self, world: World) -> None:
        user_id = await world.user()
        await world.role()

        with pytest.raises(GrantNotHeld):
            await h.revoke_role(h.RevokeRole(user_id=user_id, role="reviewer"), SYSTEM, world.identity)

        assert world.cache.calls == []

    async def test_ensure_admin_from_any_interface_updates_the_cache_too(self, world: World) -> None:
        await h.ensure_builtins(h.EnsureBuiltins(), SYSTEM, world.identity)
        user_id = await world.user()
        await h.deactivate_user(h.DeactivateUser(user_id=user_id), SYSTEM, world.identity)
        world.cache.calls.clear()

        await h.ensure_admin(h.EnsureAdmin(email="ada@example.com"), SYSTEM, world.identity)

        assert world.cache.calls == [("activated", user_id), ("granted", user_id, "admin", None)]


class TestRoles:
    async def test_a_new_role_is_known_with_its_permissions(self, world: World) -> None:
        await h.create_role(h.CreateRole(name="reviewer", permissions=["plugins:read"]), SYSTEM, world.identity)

        assert world.cache.calls == [("role_changed", "reviewer", ["plugins:read"])]

    async def test_a_permission_change_gives_the_roles_permissions_after_the_commit(self, world: World) -> None:
        await world.role(permissions=["plugins:read", "events:read"])

        await h.update_role(h.UpdateRole(role_id="reviewer", permissions=["plugins:read", "users:read"]), SYSTEM, world.identity)

        assert world.cache.calls == [("role_changed", "reviewer", ["plugins:read", "users:read"])] * 2  # one per event

    async def test_a_deleted_role_grants_nothing(self, world: World) -> None:
        await world.role()

        await h.delete_role(h.DeleteRole(role_id="reviewer"), SYSTEM, world.identity)

        assert world.cache.calls == [("role_changed", "reviewer", None)]


class Replaying(InMemoryRepository):
    """An event store that answers every append as a duplicate of an earlier one (a reused Idempotency-Key)."""

    async def save_all(self, items: Any, metadata: Any, idempotency: Any = None) -> list[AppendResult]:
        for loaded, _ in items:
            loaded.aggregate.collect_events()
        return [AppendResult(loaded.stream_id, loaded.version, None, duplicate=True) for loaded, _ in items]


class Conflicting(InMemoryRepository):
    async def save_all(self, items: Any, metadata: Any, idempotency: Any = None) -> list[AppendResult]:
        raise ConcurrencyError(items[0][0].stream_id, items[0][0].version, items[0][0].version + 1)


class TestTheRepositoryRunsReactionsOnlyAfterACommit:
    async def test_an_append_answered_as_a_duplicate_runs_nothing(self) -> None:
        world = World(Replaying())

        await h.create_role(h.CreateRole(name="reviewer"), SYSTEM, world.identity)

        assert world.cache.calls == []

    async def test_an_append_that_lost_its_race_runs_nothing(self) -> None:
        world = World(Conflicting())

        with pytest.raises(Exception):
            await h.create_role(h.CreateRole(name="reviewer"), SYSTEM, world.identity)

        assert world.cache.calls == []

    async def test_reactions_see_each_event_with_its_aggregate_in_registration_order(self) -> None:
        seen: list[tuple[str, str]] = []

        async def first(event: Any, aggregate: Any, services: Any) -> None:
            seen.append((services, type(event).__name__))

        async def second(event: Any, aggregate: Any, services: Any) -> None:
            seen.append((services, aggregate.name))

        reactions = Reactions()
        reactions.register({Role.Created: [first]}, "one")
        reactions.register({Role.Created: [second]}, "two")
        repository = ReactingRepository(InMemoryRepository(), reactions)
        fresh = repository.new("role", "reviewer")
        fresh.aggregate = Role.create("reviewer", "", [])

        await repository.save(fresh, {})

        assert seen == [("one", "Created"), ("two", "reviewer")]
        assert reactions.registered(Role.Created) == [first, second]


def test_the_identity_table_reacts_to_events_of_users_and_roles() -> None:
    assert {cls.__qualname__ for cls in REACTIONS} == {
        "User.Deactivated", "User.Activated", "User.RoleGranted", "User.RoleRevoked",
        "User.PasswordChanged", "User.PasswordReset", "User.SessionRevoked", "User.SessionsRevoked",
        "Role.Created", "Role.PermissionAdded", "Role.PermissionRemoved", "Role.Deleted",
    }
    assert all(getattr(User, c.__name__, None) is c or getattr(Role, c.__name__, None) is c for c in REACTIONS)
