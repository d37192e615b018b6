"""Role names are claimed in a stream per name, in the same append as the role's own events: given the
commands before / when a role command runs / then the streams (or a domain error). No read model, no I/O."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from application.identity.handlers import (
    CreateRole,
    DeleteRole,
    EnsureBuiltins,
    GrantRole,
    IdentityServices,
    RegisterUser,
    UpdateRole,
)
from application.identity.role_names import role_key_of
from domain.identity.access import BUILTIN_ROLES, Grant
from domain.identity.errors import RoleExists, RoleNotFound, RoleProtected
from domain.identity.role import Role, RoleName
from tests.unit.interleaving import MemoryRepository, Passwords, run, user


@pytest.fixture
async def services() -> IdentityServices:
    services = IdentityServices(repository=MemoryRepository(), passwords=Passwords(), email_key=b"k" * 32)
    await run(services, EnsureBuiltins())
    return services


def events(services: IdentityServices, stream_id: str) -> list[tuple[str, dict[str, Any]]]:
    """The stream's events as (type, payload), as a reader of the log sees them."""
    out = []
    for event in services.repository.streams.get(stream_id, []):
        payload = {k: v for k, v in vars(event).items() if not k.startswith("originator") and k != "timestamp"}
        out.append((type(event).__name__, payload))
    return out


def holder(services: IdentityServices, name: str) -> str | None:
    name_stream = None
    for event in services.repository.streams.get(f"role-name:{name}", []):
        name_stream = event.mutate(name_stream)
    return name_stream.role_key if name_stream is not None else None


def sizes(services: IdentityServices) -> dict[str, int]:
    return {stream: len(e) for stream, e in services.repository.streams.items()}


async def create(services: IdentityServices, name: str) -> None:
    await run(services, CreateRole(name=name, description=f"the {name}", permissions=["plugins:read"]))


class TestCreateRole:
    async def test_claims_the_name_in_the_same_append_as_the_role(self, services) -> None:
        await create(services, "editors")

        assert events(services, "role-name:editors") == [("Claimed", {"name": "editors", "role_key": "editors"})]
        assert [t for t, _ in events(services, "role:editors")] == ["Created"]

    async def test_rejects_a_name_another_role_carries_now(self, services) -> None:
        await create(services, "editors")
        await run(services, UpdateRole(role_id="editors", name="writers"))
        before = sizes(services)

        with pytest.raises(RoleExists) as refused:
            await create(services, "writers")

        assert refused.value.details == {"field": "name"}
        assert sizes(services) == before

    async def test_rejects_the_name_a_role_was_created_with_after_its_rename(self, services) -> None:
        await create(services, "editors")
        await run(services, UpdateRole(role_id="editors", name="writers"))

        with pytest.raises(RoleExists):
            await create(services, "editors")

    async def test_rejects_a_built_in_name(self, services) -> None:
        with pytest.raises(RoleExists):
            await create(services, "viewer")

    async def test_two_creates_of_one_name_at_once_leave_one_role(self, services) -> None:
        outcomes = await asyncio.gather(
            create(services, "twins"), create(services, "twins"), return_exceptions=True
        )

        assert sorted(type(o).__name__ for o in outcomes) == ["NoneType", "RoleExists"], outcomes
        assert [t for t, _ in events(services, "role:twins")] == ["Created"]
        assert [t for t, _ in events(services, "role-name:twins")] == ["Claimed"]

    async def test_takes_a_name_a_rename_freed(self, services) -> None:
        await create(services, "editors")
        await run(services, UpdateRole(role_id="editors", name="writers"))
        await run(services, UpdateRole(role_id="editors", name="authors"))

        await create(services, "writers")

        assert [t for t, _ in events(services, "role-name:writers")] == ["Claimed", "Released", "Reclaimed"]
        assert holder(services, "writers") == "writers"
        assert await role_key_of(services.repository, "authors") == "editors"


class TestRenameRole:
    async def test_claims_the_new_name_and_frees_the_old_one(self, services) -> None:
        await create(services, "editors")
        await run(services, UpdateRole(role_id="editors", name="writers"))

        await run(services, UpdateRole(role_id="writers", name="authors"))

        assert holder(services, "authors") == "editors"
        assert holder(services, "writers") is None
        assert holder(services, "editors") == "editors"  # the key stays the role's

    async def test_rejects_a_name_another_role_holds_and_writes_nothing(self, services) -> None:
        await create(services, "editors")
        await create(services, "writers")
        before = sizes(services)

        with pytest.raises(RoleExists):
            await run(services, UpdateRole(role_id="editors", name="writers", description="changed"))

        assert sizes(services) == before

    async def test_may_take_back_the_name_it_was_created_with(self, services) -> None:
        await create(services, "editors")
        await run(services, UpdateRole(role_id="editors", name="writers"))

        await run(services, UpdateRole(role_id="writers", name="editors"))

        assert holder(services, "editors") == "editors"
        assert holder(services, "writers") is None
        assert [t for t, _ in events(services, "role-name:editors")] == ["Claimed"]

    async def test_two_roles_renamed_to_one_name_at_once_leave_one_holder(self, services) -> None:
        await create(services, "first")
        await create(services, "second")

        outcomes = await asyncio.gather(
            run(services, UpdateRole(role_id="first", name="wanted")),
            run(services, UpdateRole(role_id="second", name="wanted")),
            return_exceptions=True,
        )

        assert sum(isinstance(o, RoleExists) for o in outcomes) == 1, outcomes
        renamed = [key for key in ("first", "second") if (await load(services, key)).name == "wanted"]
        assert renamed == [holder(services, "wanted")]

    async def test_a_built_in_role_keeps_its_name(self, services) -> None:
        with pytest.raises(RoleProtected):
            await run(services, UpdateRole(role_id="viewer", name="readers"))

        assert holder(services, "readers") is None

    async def test_rejects_the_key_of_a_role_made_before_names_were_claimed(self, services) -> None:
        legacy = services.repository.new("role", "legacy")
        legacy.aggregate = Role.create("legacy", "", [])
        await services.repository.save(legacy, {})
        await create(services, "editors")

        with pytest.raises(RoleExists):
            await run(services, UpdateRole(role_id="editors", name="legacy"))


class TestDeleteRole:
    async def test_frees_its_current_name_and_keeps_the_one_it_was_created_with(self, services) -> None:
        await create(services, "editors")
        await run(services, UpdateRole(role_id="editors", name="writers"))

        await run(services, DeleteRole(role_id="writers"))

        assert holder(services, "writers") is None
        assert holder(services, "editors") == "editors"
        await create(services, "writers")
        with pytest.raises(RoleExists):
            await create(services, "editors")

    async def test_a_deleted_role_is_not_found_by_either_name(self, services) -> None:
        await create(services, "editors")
        await run(services, DeleteRole(role_id="editors"))

        with pytest.raises(RoleNotFound):
            await run(services, DeleteRole(role_id="editors"))


class TestRoleLookup:
    async def test_a_grant_by_the_current_name_records_the_key(self, services) -> None:
        await create(services, "editors")
        await run(services, UpdateRole(role_id="editors", name="writers"))
        result = await run(services, RegisterUser(email="e@example.com", password="long enough"))
        user_id = result.stream_id.split(":", 1)[1]

        await run(services, GrantRole(user_id=user_id, role="writers"))

        assert (await user(services, user_id)).grants == [Grant("editors", None)]

    async def test_an_unknown_or_malformed_name_is_itself(self, services) -> None:
        assert await role_key_of(services.repository, "nobody") == "nobody"
        assert await role_key_of(services.repository, "Not A Name!" * 50) == "Not A Name!" * 50


class TestEnsureBuiltins:
    async def test_claims_the_built_in_names(self, services) -> None:
        assert {name: holder(services, name) for name in BUILTIN_ROLES} == {name: name for name in BUILTIN_ROLES}

    async def test_claims_the_names_of_built_ins_made_before_names_were_claimed(self) -> None:
        services = IdentityServices(repository=MemoryRepository(), passwords=Passwords(), email_key=b"k" * 32)
        old = services.repository.new("role", "viewer")
        description, permissions = BUILTIN_ROLES["viewer"]
        old.aggregate = Role.create("viewer", description, permissions)
        await services.repository.save(old, {})

        await run(services, EnsureBuiltins())
        again = sizes(services)
        await run(services, EnsureBuiltins())

        assert holder(services, "viewer") == "viewer"
        assert [t for t, _ in events(services, "role:viewer")] == ["Created"]
        assert sizes(services) == again


class TestRoleNameAggregate:
    def test_a_name_held_by_another_role_is_refused(self) -> None:
        name = RoleName(name="writers", role_key="editors")

        with pytest.raises(RoleExists):
            name.claim("authors")

    def test_a_role_never_releases_its_key(self) -> None:
        name = RoleName(name="editors", role_key="editors")

        assert name.release("editors") is False
        assert name.role_key == "editors"

    def test_only_the_holder_releases(self) -> None:
        name = RoleName(name="writers", role_key="editors")

        assert name.release("authors") is False
        assert name.release("editors") is True
        assert name.role_key is None


async def load(services: IdentityServices, key: str) -> Role:
    loaded = await services.repository.load(Role, "role", key, Role.create_id(key))
    return loaded.aggregate
