"""No lock-out, no escalation, in the domain: built-in roles, the admin registry, the grant policies,
user ids and e-mail reservations. Given events / when command / then events (or a domain error)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any
from uuid import NAMESPACE_URL, uuid5

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from domain.identity.access import BUILTIN_ROLES, Grant, check_may_change_user, check_may_grant, resolve_access

from domain.identity.errors import EscalationForbidden, UserProtected
from domain.identity.admins import AdminRegistry
from domain.identity.errors import LastAdmin
from domain.identity.role import Role, role_uuid
from domain.identity.errors import RoleProtected
from domain.identity.user import EmailReservation, User, email_digest

ENVELOPE = {"originator_id", "originator_version", "timestamp", "originator_topic"}
ROLES = {name: permissions for name, (_, permissions) in BUILTIN_ROLES.items()}


def given(cls: type[Aggregate], aggregate_id: Any, *events: tuple[str, dict]) -> Any:
    """The aggregate as its stream of past events leaves it (nothing pending)."""
    aggregate = None
    for version, (name, payload) in enumerate(events, start=1):
        kwargs = dict(payload, originator_id=aggregate_id, originator_version=version, timestamp=datetime.now(timezone.utc))
        if version == 1:
            kwargs["originator_topic"] = get_topic(cls)
        aggregate = getattr(cls, name)(**kwargs).mutate(aggregate)
    return aggregate


def recorded(aggregate: Aggregate) -> list[tuple[str, dict[str, Any]]]:
    return [
        (type(e).__name__, {f.name: getattr(e, f.name) for f in dataclasses.fields(e) if f.name not in ENVELOPE})
        for e in aggregate.collect_events()
    ]


def role(name: str, permissions: list[str]) -> Role:
    return given(Role, role_uuid(name), ("Created", dict(key=name, name=name, description="", permissions=permissions)))


def registry(*members: str) -> AdminRegistry:
    events = [("Opened", {})] + [("Admitted", dict(user_id=m)) for m in members]
    return given(AdminRegistry, AdminRegistry.create_id(), *events)


def access(*grants: tuple[str, str | None], roles: dict[str, list[str]] | None = None) -> Any:
    return resolve_access("caller", [Grant(r, s) for r, s in grants], {**ROLES, **(roles or {})})


class TestBuiltinRoles:
    @pytest.mark.parametrize("name", sorted(BUILTIN_ROLES))
    def test_rejects_adding_a_permission_to_a_builtin_role(self, name: str) -> None:
        builtin = role(name, ROLES[name])

        with pytest.raises(RoleProtected) as raised:
            builtin.add_permission("users:manage")

        assert raised.value.code == "ROLE_PROTECTED"
        assert recorded(builtin) == []

    @pytest.mark.parametrize("name", sorted(BUILTIN_ROLES))
    def test_rejects_removing_a_permission_from_a_builtin_role(self, name: str) -> None:
        builtin = role(name, ROLES[name])

        with pytest.raises(RoleProtected):
            builtin.remove_permission(ROLES[name][0])

    def test_rejects_renaming_or_deleting_a_builtin_role(self) -> None:
        admin = role("admin", ["*:*"])

        with pytest.raises(RoleProtected):
            admin.rename("root")
        with pytest.raises(RoleProtected):
            admin.delete()

    def test_a_builtin_role_may_be_described_anew(self) -> None:
        viewer = role("viewer", ROLES["viewer"])

        viewer.describe("Reads the catalog of every site")

        assert recorded(viewer) == [("Described", dict(description="Reads the catalog of every site"))]

    def test_a_custom_role_still_takes_permissions(self) -> None:
        custom = role("release-manager", ["plugins:read"])

        custom.add_permission("plugins:update")
        custom.remove_permission("plugins:read")

        assert recorded(custom) == [
            ("PermissionAdded", dict(permission="plugins:update")),
            ("PermissionRemoved", dict(permission="plugins:read")),
        ]


class TestAdminRegistry:
    def test_admits_a_new_administrator(self) -> None:
        admins = registry("a")

        admins.follow("b", True)

        assert recorded(admins) == [("Admitted", dict(user_id="b"))]

    def test_dismisses_an_administrator_while_another_remains(self) -> None:
        admins = registry("a", "b")

        admins.follow("a", False)

        assert recorded(admins) == [("Dismissed", dict(user_id="a"))]

    def test_rejects_dismissing_the_last_administrator(self) -> None:
        admins = registry("a")

        with pytest.raises(LastAdmin) as raised:
            admins.follow("a", False)

        assert raised.value.code == "LAST_ADMIN"
        assert recorded(admins) == []

    def test_records_nothing_for_a_user_who_was_never_an_administrator(self) -> None:
        admins = registry("a")

        admins.follow("b", False)
        admins.follow("a", True)

        assert recorded(admins) == []

    def test_the_second_of_two_dismissals_read_from_the_same_version_is_refused_when_replayed(self) -> None:
        """Two commands that each saw {a, b}: once the first is recorded, deciding again refuses the second."""
        admins = registry("a", "b")
        admins.follow("a", False)
        [(name, payload)] = recorded(admins)
        after_first = given(
            AdminRegistry, AdminRegistry.create_id(), ("Opened", {}), ("Admitted", dict(user_id="a")),
            ("Admitted", dict(user_id="b")), (name, payload),
        )

        with pytest.raises(LastAdmin):
            after_first.follow("b", False)


class TestUser:
    def test_the_id_is_random_and_not_derived_from_the_email(self) -> None:
        first = User(email="alice@example.com", full_name="", password_hash="h", active=True)
        second = User(email="alice@example.com", full_name="", password_hash="h", active=True)

        assert first.id != second.id
        assert first.id.version == 4
        assert first.id != uuid5(NAMESPACE_URL, "charter:user:alice@example.com")

    def test_an_active_global_admin_counts_as_an_administrator(self) -> None:
        user = User(email="a@example.com", full_name="", password_hash="h", active=True)
        user.grant_role("admin", "site-a")
        assert not user.is_admin and not user.holds_global_role

        user.grant_role("admin", None)
        assert user.is_admin and user.holds_global_role

        user.deactivate("left")
        assert not user.is_admin and user.holds_global_role


class TestEmailReservation:
    def test_the_digest_depends_on_the_normalised_address_and_the_key(self) -> None:
        key = b"k" * 32

        digest = email_digest(key, "Alice@Example.com ")

        assert digest == email_digest(key, "alice@example.com")
        assert digest != email_digest(b"x" * 32, "alice@example.com")
        assert "alice" not in digest and len(digest) == 64

    def test_records_who_reserved_the_address(self) -> None:
        reservation = EmailReservation(digest="d" * 64, user_id="u-1")

        assert recorded(reservation) == [("Reserved", dict(digest="d" * 64, user_id="u-1"))]
        assert reservation.id == EmailReservation.create_id("d" * 64)


class TestMayGrant:
    def test_a_global_admin_grants_anything_anywhere(self) -> None:
        admin = access(("admin", None))

        check_may_grant(admin, "admin", ["*:*"], None)
        check_may_grant(admin, "auditor", ROLES["auditor"], "site-a")

    def test_a_site_admin_grants_roles_within_their_site(self) -> None:
        check_may_grant(access(("admin", "site-a")), "auditor", ROLES["auditor"], "site-a")

    def test_rejects_a_site_admin_granting_admin_at_their_site(self) -> None:
        with pytest.raises(EscalationForbidden) as raised:
            check_may_grant(access(("admin", "site-a")), "admin", ["*:*"], "site-a")

        assert raised.value.code == "ESCALATION_FORBIDDEN"

    def test_rejects_a_grantor_handing_out_permissions_they_lack(self) -> None:
        manager = access(("user-manager", "site-a"), roles={"user-manager": ["roles:grant", "users:read", "sites:read"]})

        check_may_grant(manager, "reader", ["sites:read"], "site-a")
        with pytest.raises(EscalationForbidden) as raised:
            check_may_grant(manager, "site-admin", ROLES["site-admin"], "site-a")

        assert "sites:*" in raised.value.details["missing_permissions"]

    def test_rejects_a_grant_at_another_site_than_where_the_permissions_are_held(self) -> None:
        with pytest.raises(EscalationForbidden):
            check_may_grant(access(("admin", "site-a")), "viewer", ROLES["viewer"], "site-b")

    def test_a_narrow_permission_does_not_cover_a_wildcard(self) -> None:
        holder = access(("narrow", None), roles={"narrow": ["roles:grant", "plugins:read"]})

        with pytest.raises(EscalationForbidden):
            check_may_grant(holder, "plugin-admin", ROLES["plugin-admin"], None)


class TestMayChangeUser:
    def test_rejects_a_site_admin_changing_a_user_with_a_global_role(self) -> None:
        with pytest.raises(UserProtected) as raised:
            check_may_change_user(access(("admin", "site-a")), "users:manage", holds_global_role=True)

        assert raised.value.code == "USER_PROTECTED"

    def test_a_site_admin_changes_users_of_sites_only(self) -> None:
        check_may_change_user(access(("admin", "site-a")), "roles:grant", holds_global_role=False)

    def test_a_global_holder_changes_anyone(self) -> None:
        check_may_change_user(access(("admin", None)), "users:manage", holds_global_role=True)
