"""Identity command handlers against the in-memory fakes: given events -> command -> new events (or error).

One class per command, and the rules that span commands: e-mail reservations, the last administrator
(also when two administrators are removed at once), grants by site admins."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import pytest

from application.context import CommandContext, CommandResult
from application.errors import PreconditionFailed
from application.identity.accounts import HANDLERS as ACCOUNT_HANDLERS
from application.identity.accounts import ChangePassword, EndSessions, RecordSignIn, RecordSignOut, ResetPassword, UpdateProfile
from application.identity.handlers import HANDLERS as IDENTITY_HANDLERS
from application.identity.handlers import (
    ActivateUser,
    CreateRole,
    DeactivateUser,
    DefinePermission,
    DeleteRole,
    EnsureAdmin,
    EnsureBuiltins,
    GrantRole,
    IdentityServices,
    RegisterUser,
    RevokeRole,
    SignUp,
    UpdateRole,
    find_user_id,
)
from domain.identity.access import BUILTIN_ROLES, Grant, resolve_access
from domain.identity.errors import (
    EscalationForbidden,
    GrantNotHeld,
    InvalidEmail,
    InvalidPermission,
    InvalidRoleName,
    LastAdmin,
    PasswordRequired,
    PermissionExists,
    RoleExists,
    RoleNotFound,
    RoleProtected,
    UserExists,
    UserNotFound,
    UserProtected,
    WeakPassword,
)
from domain.identity.user import User
from tests.unit.fakes import FakePasswords, MemoryRepository

SYSTEM = CommandContext()
HANDLERS = {**IDENTITY_HANDLERS, **ACCOUNT_HANDLERS}


@pytest.fixture
def repo() -> MemoryRepository:
    return MemoryRepository()


@pytest.fixture
async def services(repo: MemoryRepository) -> IdentityServices:
    services = IdentityServices(repository=repo, passwords=FakePasswords(), email_key=b"k" * 32)
    await run(services, EnsureBuiltins())
    repo.new_events()  # the built-in roles are the given; each test's events come after
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


def users_stream(user_id: str) -> str:
    return f"user:{user_id}"


def named(events: list[tuple[str, str, dict[str, Any]]]) -> list[tuple[str, str]]:
    """(stream type, event name) of each event."""
    return [(stream_id.split(":", 1)[0], name) for stream_id, name, _ in events]


def as_holder(*grants: tuple[str, str | None]) -> CommandContext:
    roles = {name: permissions for name, (_, permissions) in BUILTIN_ROLES.items()}
    return CommandContext(actor="caller", access=resolve_access("caller", [Grant(r, s) for r, s in grants], roles))


def test_every_identity_command_has_a_handler() -> None:
    assert set(IDENTITY_HANDLERS) == {
        RegisterUser, SignUp, ActivateUser, DeactivateUser, GrantRole, RevokeRole, CreateRole,
        UpdateRole, DeleteRole, DefinePermission, EnsureBuiltins, EnsureAdmin,
    }
    assert set(ACCOUNT_HANDLERS) == {ChangePassword, ResetPassword, UpdateProfile, RecordSignIn, RecordSignOut, EndSessions}


class TestRegisterUser:
    async def test_records_the_user_and_the_reservation_of_the_address_together(self, services, repo) -> None:
        result = await run(services, RegisterUser(email=" Alice@Example.com", password="long enough", full_name=" Alice "))

        user_id = result.stream_id.split(":", 1)[1]
        events = repo.new_events()
        assert named(events) == [("user", "Registered"), ("email", "Reserved")]
        assert events[0][2] == dict(email="alice@example.com", full_name="Alice", password_hash="hashed:long enough", active=True)
        assert events[1][2]["user_id"] == user_id and "alice" not in events[1][0]
        assert (result.stream_id, result.version) == (users_stream(user_id), 1)

    async def test_registers_an_inactive_user_when_asked(self, services, repo) -> None:
        await run(services, RegisterUser(email="a@example.com", password="long enough", active=False))

        assert repo.new_events()[0][2]["active"] is False

    async def test_rejects_a_short_password(self, services, repo) -> None:
        with pytest.raises(WeakPassword) as refused:
            await run(services, RegisterUser(email="a@example.com", password="short"))

        assert refused.value.details["field"] == "password"
        assert repo.new_events() == []

    async def test_rejects_what_is_not_an_address(self, services, repo) -> None:
        with pytest.raises(InvalidEmail):
            await run(services, RegisterUser(email="not-an-address", password="long enough"))

        assert repo.new_events() == []

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
    async def test_records_the_user_its_grant_its_reservation_and_its_admission_together(self, services, repo) -> None:
        await run(services, EnsureAdmin(email="root@example.com", password="long enough"))

        assert named(repo.new_events()) == [
            ("user", "Registered"), ("user", "RoleGranted"), ("email", "Reserved"), ("admins", "Opened"), ("admins", "Admitted"),
        ]

    async def test_requires_a_password_for_a_new_address(self, services, repo) -> None:
        with pytest.raises(PasswordRequired):
            await run(services, EnsureAdmin(email="root@example.com"))

        assert repo.new_events() == []

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


class TestSignUp:
    async def test_registers_a_new_address(self, services, repo) -> None:
        await run(services, SignUp(email="new@example.com", password="long enough"))

        assert named(repo.new_events()) == [("user", "Registered"), ("email", "Reserved")]

    async def test_records_nothing_for_a_taken_address_and_answers_alike(self, services, repo) -> None:
        await register(services, "taken@example.com")
        repo.new_events()

        result = await run(services, SignUp(email="taken@example.com", password="another one"))

        assert repo.new_events() == []
        assert result.stream_id.startswith("email:") and result.version == 0 and result.position is None


class TestActivateUser:
    async def test_records_activated(self, services, repo) -> None:
        user_id = (await run(services, RegisterUser(email="a@example.com", password="long enough", active=False))).stream_id[5:]
        repo.new_events()

        await run(services, ActivateUser(user_id=user_id))

        assert repo.new_events() == [(users_stream(user_id), "Activated", dict(reason=""))]

    async def test_records_activated_with_the_reason(self, services, repo) -> None:
        user_id = await register(services, "a@example.com")
        await run(services, DeactivateUser(user_id=user_id))
        repo.new_events()

        await run(services, ActivateUser(user_id=user_id, reason="back from leave"))

        assert repo.new_events() == [(users_stream(user_id), "Activated", dict(reason="back from leave"))]

    async def test_records_nothing_for_an_active_user(self, services, repo) -> None:
        user_id = await register(services, "a@example.com")
        repo.new_events()

        await run(services, ActivateUser(user_id=user_id))

        assert repo.new_events() == []

    async def test_reactivating_an_administrator_readmits_them(self, services, repo) -> None:
        first = await register(services, "a@example.com", ("admin", None))
        await register(services, "b@example.com", ("admin", None))
        await run(services, DeactivateUser(user_id=first))
        repo.new_events()

        await run(services, ActivateUser(user_id=first))

        assert named(repo.new_events()) == [("user", "Activated"), ("admins", "Admitted")]

    @pytest.mark.parametrize("user_id", ["not-a-uuid", "00000000-0000-4000-8000-000000000000"])
    async def test_rejects_an_unknown_user(self, services, user_id) -> None:
        with pytest.raises(UserNotFound):
            await run(services, ActivateUser(user_id=user_id))


class TestDeactivateUser:
    async def test_records_deactivated_with_the_reason(self, services, repo) -> None:
        user_id = await register(services, "a@example.com")
        repo.new_events()

        await run(services, DeactivateUser(user_id=user_id, reason="left the company"))

        assert repo.new_events() == [(users_stream(user_id), "Deactivated", dict(reason="left the company"))]

    async def test_deactivating_an_administrator_dismisses_them_in_the_same_append(self, services, repo) -> None:
        first = await register(services, "a@example.com", ("admin", None))
        await register(services, "b@example.com", ("admin", None))
        repo.new_events()

        await run(services, DeactivateUser(user_id=first))

        events = repo.new_events()
        assert named(events) == [("user", "Deactivated"), ("admins", "Dismissed")]
        assert events[1][2] == dict(user_id=first)

    async def test_with_a_stale_if_match_is_refused(self, services, repo) -> None:
        user_id = await register(services, "a@example.com")

        with pytest.raises(PreconditionFailed):
            await run(services, DeactivateUser(user_id=user_id), CommandContext(expected_version=5))

        assert (await user(services, user_id)).active


class TestChangePassword:
    async def test_records_the_new_hash(self, services, repo) -> None:
        user_id = await register(services, "a@example.com")
        repo.new_events()

        await run(services, ChangePassword(user_id=user_id, password="a longer password"))

        assert repo.new_events() == [(users_stream(user_id), "PasswordChanged", dict(
            password_hash="hashed:a longer password", kept_session="", client_address="", user_agent="",
        ))]  # fmt: skip

    async def test_rejects_a_short_password(self, services, repo) -> None:
        user_id = await register(services, "a@example.com")
        repo.new_events()

        with pytest.raises(WeakPassword):
            await run(services, ChangePassword(user_id=user_id, password="short"))

        assert repo.new_events() == []

    async def test_a_site_admin_cannot_change_a_global_users_password(self, services) -> None:
        user_id = await register(services, "a@example.com", ("viewer", None))

        with pytest.raises(UserProtected):
            await run(services, ChangePassword(user_id=user_id, password="taken over"), as_holder(("admin", "site-a")))


class TestGrantRole:
    async def test_records_role_granted_at_a_site_with_the_site_id(self, services, repo) -> None:
        user_id = await register(services, "a@example.com")
        repo.new_events()

        await run(services, GrantRole(user_id=user_id, role="auditor", site_id="site-a"))

        assert repo.new_events() == [(users_stream(user_id), "RoleGranted", dict(role="auditor", site_id="site-a", reason=""))]
        assert repo.recorded(users_stream(user_id))[-1].site_id == "site-a"

    async def test_records_role_granted_with_the_reason(self, services, repo) -> None:
        user_id = await register(services, "a@example.com")
        repo.new_events()

        await run(services, GrantRole(user_id=user_id, role="auditor", reason="audit of Q3"))

        assert repo.new_events() == [(users_stream(user_id), "RoleGranted", dict(role="auditor", site_id=None, reason="audit of Q3"))]

    async def test_grants_a_renamed_role_by_its_new_name_under_its_key(self, services, repo) -> None:
        await run(services, CreateRole(name="editors", permissions=["plugins:read"]))
        await run(services, UpdateRole(role_id="editors", name="writers"))
        user_id = await register(services, "a@example.com")
        repo.new_events()

        await run(services, GrantRole(user_id=user_id, role="writers"))

        assert repo.new_events()[0][2] == dict(role="editors", site_id=None, reason="")

    async def test_records_nothing_for_a_grant_already_held(self, services, repo) -> None:
        user_id = await register(services, "a@example.com", ("viewer", None))
        repo.new_events()

        await run(services, GrantRole(user_id=user_id, role="viewer"))

        assert repo.new_events() == []

    async def test_rejects_an_unknown_role(self, services) -> None:
        user_id = await register(services, "a@example.com")

        with pytest.raises(RoleNotFound):
            await run(services, GrantRole(user_id=user_id, role="wizard"))

    async def test_granting_admin_everywhere_admits_to_the_registry(self, services, repo) -> None:
        user_id = await register(services, "a@example.com")
        repo.new_events()

        await run(services, GrantRole(user_id=user_id, role="admin"))

        assert named(repo.new_events()) == [("user", "RoleGranted"), ("admins", "Opened"), ("admins", "Admitted")]


class TestRevokeRole:
    async def test_records_role_revoked(self, services, repo) -> None:
        user_id = await register(services, "a@example.com", ("auditor", "site-a"))
        repo.new_events()

        await run(services, RevokeRole(user_id=user_id, role="auditor", site_id="site-a"))

        assert repo.new_events() == [(users_stream(user_id), "RoleRevoked", dict(role="auditor", site_id="site-a", reason=""))]

    async def test_records_role_revoked_with_the_reason(self, services, repo) -> None:
        user_id = await register(services, "a@example.com", ("auditor", "site-a"))
        repo.new_events()

        await run(services, RevokeRole(user_id=user_id, role="auditor", site_id="site-a", reason="audit done"))

        assert repo.new_events() == [
            (users_stream(user_id), "RoleRevoked", dict(role="auditor", site_id="site-a", reason="audit done"))
        ]

    async def test_rejects_a_grant_not_held(self, services, repo) -> None:
        user_id = await register(services, "a@example.com", ("auditor", "site-a"))
        repo.new_events()

        with pytest.raises(GrantNotHeld):
            await run(services, RevokeRole(user_id=user_id, role="auditor", site_id="site-b"))

        assert repo.new_events() == []

    async def test_revokes_a_grant_of_a_deleted_role(self, services, repo) -> None:
        await run(services, CreateRole(name="editors", permissions=["plugins:read"]))
        user_id = await register(services, "a@example.com", ("editors", None))
        await run(services, DeleteRole(role_id="editors"))
        repo.new_events()

        await run(services, RevokeRole(user_id=user_id, role="editors"))

        assert repo.new_events() == [(users_stream(user_id), "RoleRevoked", dict(role="editors", site_id=None, reason=""))]


class TestCreateRole:
    async def test_records_created_keyed_by_its_name(self, services, repo) -> None:
        result = await run(services, CreateRole(name="editors", description="Edit", permissions=["plugins:read", "sites:*"]))

        assert repo.new_events() == [
            ("role:editors", "Created", dict(key="editors", name="editors", description="Edit", permissions=["plugins:read", "sites:*"])),
            ("role-name:editors", "Claimed", dict(name="editors", role_key="editors")),
        ]
        assert result.stream_id == "role:editors"

    async def test_rejects_a_name_in_use(self, services, repo) -> None:
        with pytest.raises(RoleExists):
            await run(services, CreateRole(name="viewer"))

    async def test_rejects_the_name_of_a_renamed_role(self, services, repo) -> None:
        await run(services, CreateRole(name="editors"))
        await run(services, UpdateRole(role_id="editors", name="writers"))

        with pytest.raises(RoleExists):
            await run(services, CreateRole(name="writers"))

    async def test_rejects_a_key_taken_before_even_after_a_rename(self, services, repo) -> None:
        await run(services, CreateRole(name="editors"))
        await run(services, UpdateRole(role_id="editors", name="writers"))
        repo.new_events()

        with pytest.raises(RoleExists):
            await run(services, CreateRole(name="editors"))

        assert repo.new_events() == []

    async def test_rejects_an_invalid_permission(self, services, repo) -> None:
        with pytest.raises(InvalidPermission):
            await run(services, CreateRole(name="editors", permissions=["Plugins Read"]))

    async def test_rejects_an_invalid_name(self, services, repo) -> None:
        with pytest.raises(InvalidRoleName):
            await run(services, CreateRole(name="Editors!"))


class TestUpdateRole:
    @pytest.fixture
    async def editors(self, services, repo) -> None:
        await run(services, CreateRole(name="editors", description="Edit", permissions=["plugins:read", "sites:read"]))
        repo.new_events()

    async def test_records_each_change_in_turn(self, services, repo, editors) -> None:
        await run(services, UpdateRole(role_id="editors", name="writers", description="Write",
                                       permissions=["sites:read", "audit:read"]))

        events = repo.new_events()
        assert [e for e in events if e[0] == "role:editors"] == [
            ("role:editors", "Renamed", dict(old_name="editors", name="writers")),
            ("role:editors", "Described", dict(description="Write")),
            ("role:editors", "PermissionAdded", dict(permission="audit:read")),
            ("role:editors", "PermissionRemoved", dict(permission="plugins:read")),
        ]
        assert ("role-name:writers", "Claimed", dict(name="writers", role_key="editors")) in events

    async def test_finds_the_role_by_its_current_name(self, services, repo, editors) -> None:
        await run(services, UpdateRole(role_id="editors", name="writers"))

        await run(services, UpdateRole(role_id="writers", description="Found"))

        assert repo.new_events()[-1] == ("role:editors", "Described", dict(description="Found"))

    async def test_records_nothing_when_nothing_changes(self, services, repo, editors) -> None:
        await run(services, UpdateRole(role_id="editors", name="editors", description="Edit"))

        assert repo.new_events() == []

    async def test_rejects_a_name_in_use(self, services, repo, editors) -> None:
        with pytest.raises(RoleExists):
            await run(services, UpdateRole(role_id="editors", name="viewer"))

    async def test_rejects_renaming_a_builtin_role(self, services) -> None:
        with pytest.raises(RoleProtected):
            await run(services, UpdateRole(role_id="viewer", name="readers"))

    async def test_rejects_widening_a_builtin_role(self, services) -> None:
        with pytest.raises(RoleProtected):
            await run(services, UpdateRole(role_id="viewer", permissions=["*:*"]))

    async def test_rejects_an_invalid_permission_before_recording_anything(self, services, repo, editors) -> None:
        with pytest.raises(InvalidPermission):
            await run(services, UpdateRole(role_id="editors", description="new", permissions=["nope"]))

        assert repo.new_events() == []

    async def test_rejects_an_unknown_role(self, services) -> None:
        with pytest.raises(RoleNotFound):
            await run(services, UpdateRole(role_id="wizards", description="x"))

    async def test_with_a_stale_if_match_is_refused(self, services, repo, editors) -> None:
        with pytest.raises(PreconditionFailed):
            await run(services, UpdateRole(role_id="editors", description="x"), CommandContext(expected_version=3))


class TestDeleteRole:
    async def test_records_deleted(self, services, repo) -> None:
        await run(services, CreateRole(name="editors"))
        repo.new_events()

        await run(services, DeleteRole(role_id="editors"))

        assert repo.new_events() == [("role:editors", "Deleted", dict(reason=""))]

    async def test_records_deleted_with_the_reason_and_frees_the_name(self, services, repo) -> None:
        await run(services, CreateRole(name="editors"))
        await run(services, UpdateRole(role_id="editors", name="writers"))
        repo.new_events()

        await run(services, DeleteRole(role_id="writers", reason="merged into reviewers"))

        assert repo.new_events() == [
            ("role:editors", "Deleted", dict(reason="merged into reviewers")),
            ("role-name:writers", "Released", dict(role_key="editors")),
        ]

    async def test_a_deleted_role_is_not_found_again(self, services) -> None:
        await run(services, CreateRole(name="editors"))
        await run(services, DeleteRole(role_id="editors"))

        with pytest.raises(RoleNotFound):
            await run(services, DeleteRole(role_id="editors"))

    async def test_rejects_deleting_a_builtin_role(self, services) -> None:
        with pytest.raises(RoleProtected):
            await run(services, DeleteRole(role_id="admin"))


class TestDefinePermission:
    async def test_records_defined(self, services, repo) -> None:
        await run(services, DefinePermission(name="reports:export", description="Export reports"))

        assert repo.new_events() == [("permission:reports:export", "Defined", dict(name="reports:export", description="Export reports"))]

    async def test_rejects_a_permission_defined_before(self, services) -> None:
        await run(services, DefinePermission(name="reports:export"))

        with pytest.raises(PermissionExists):
            await run(services, DefinePermission(name="reports:export"))

    @pytest.mark.parametrize("name", ["reports:*", "reports", "Reports:Export"])
    async def test_rejects_what_is_not_one_resource_and_one_action(self, services, name) -> None:
        with pytest.raises(InvalidPermission):
            await run(services, DefinePermission(name=name))


class TestEnsureBuiltins:
    async def test_creates_the_builtin_roles_and_the_permissions_given(self, repo) -> None:
        services = IdentityServices(repository=repo, passwords=FakePasswords(), email_key=b"k" * 32)

        await run(services, EnsureBuiltins(permissions={"plugins:read": "Read the catalog"}))

        events = repo.new_events()
        assert sorted(s for s, name, _ in events if name == "Created") == sorted(f"role:{r}" for r in BUILTIN_ROLES)
        assert [(s, name) for s, name, _ in events if s.startswith("permission:")] == [("permission:plugins:read", "Defined")]
        assert sorted(s for s, name, _ in events if name == "Claimed") == sorted(f"role-name:{r}" for r in BUILTIN_ROLES)

    async def test_records_nothing_the_second_time(self, services, repo) -> None:
        await run(services, EnsureBuiltins())

        assert repo.new_events() == []

    async def test_a_second_start_tries_no_append_so_it_takes_no_global_position(self, repo) -> None:
        services = IdentityServices(repository=repo, passwords=FakePasswords(), email_key=b"k" * 32)
        permissions = {"plugins:read": "Read the catalog", "sites:read": "Read sites"}
        await run(services, EnsureBuiltins(permissions=permissions))
        repo.new_events()

        await run(services, EnsureBuiltins(permissions={**permissions, "tasks:read": "Read tasks"}))

        assert [(s, name) for s, name, _ in repo.new_events()] == [("permission:tasks:read", "Defined")]
        assert repo.refused == 0
