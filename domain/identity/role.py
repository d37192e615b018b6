"""The Role aggregate: a named bundle of permissions. Built-in roles cannot be renamed, deleted or given
other permissions (so nobody can widen `viewer` into `admin`, nor empty `admin`)."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.identity.access import BUILTIN_ROLES, check_permission, check_role_name

from domain.identity.errors import InvalidPermission
from domain.identity.errors import RoleExists, RoleProtected, RoleDeleted

STREAM_TYPE = "role"


def role_uuid(name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"charter:role:{name}")


class Role(Aggregate):
    """Stream key: the name the role was created with (ids stay stable across renames)."""

    @staticmethod
    def create_id(key: str) -> UUID:
        return role_uuid(key)

    @event("Created")
    def __init__(self, key: str, name: str, description: str, permissions: list[str]) -> None:
        self.key = key
        self.name = name
        self.description = description
        self.permissions = sorted(set(permissions))
        self.deleted = False

    @classmethod
    def create(cls, name: str, description: str, permissions: list[str]) -> "Role":
        check_role_name(name)
        for permission in permissions:
            check_permission(permission)
        return cls(key=name, name=name, description=description, permissions=permissions)

    @property
    def builtin(self) -> bool:
        return self.key in BUILTIN_ROLES

    def check_exists(self) -> None:
        if self.deleted:
            raise RoleDeleted(f"role {self.name} was deleted", role=self.name)

    def check_editable(self, what: str = "renamed or deleted") -> None:
        self.check_exists()
        if self.builtin:
            raise RoleProtected(f"built-in role {self.name} cannot be {what}", role=self.name)

    def rename(self, name: str) -> bool:
        check_role_name(name)
        if name == self.name:
            return False
        self.check_editable()
        self._renamed(old_name=self.name, name=name)
        return True

    @event("Renamed")
    def _renamed(self, old_name: str, name: str) -> None:
        self.name = name

    def describe(self, description: str) -> bool:
        self.check_exists()
        if description == self.description:
            return False
        self._described(description=description)
        return True

    @event("Described")
    def _described(self, description: str) -> None:
        self.description = description

    def add_permission(self, permission: str) -> bool:
        self.check_exists()
        check_permission(permission)
        if permission in self.permissions:
            return False
        self.check_editable("given other permissions")
        self._permission_added(permission=permission)
        return True

    @event("PermissionAdded")
    def _permission_added(self, permission: str) -> None:
        self.permissions = sorted({*self.permissions, permission})

    def remove_permission(self, permission: str) -> bool:
        self.check_exists()
        if permission not in self.permissions:
            return False
        self.check_editable("given other permissions")
        self._permission_removed(permission=permission)
        return True

    @event("PermissionRemoved")
    def _permission_removed(self, permission: str) -> None:
        self.permissions = [p for p in self.permissions if p != permission]

    def delete(self, reason: str | None = None) -> None:
        self.check_editable()
        self._deleted(reason=reason or "")

    class Deleted(Aggregate.Event):
        reason: str = ""  # the default replays events recorded before deletions took a reason

    @event(Deleted)
    def _deleted(self, reason: str) -> None:
        self.deleted = True


NAME_STREAM = "role-name"


def role_name_uuid(name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"charter:role-name:{name}")


class RoleName(Aggregate):
    """One role name and the role (by key) holding it, so a name belongs to one role at most. Claimed
    and released in the same append as the role's own events (created, renamed, deleted), so of two
    commands giving one name to two roles, one wins and the other finds the name taken.

    A role keeps the name it was created with (its key) for good: grants and the role's stream name it
    by key, so that name never comes to mean another role, not after a rename nor after a deletion. Role
    names are not secret (every Role event carries them), so the stream key is the name itself."""

    @staticmethod
    def create_id(name: str) -> UUID:
        return role_name_uuid(name)

    @event("Claimed")
    def __init__(self, name: str, role_key: str) -> None:
        self.name = name
        self.role_key: str | None = role_key

    def claim(self, role_key: str) -> bool:
        """Give the name to `role_key`; False when it has it already; RoleExists when another role does."""
        if self.role_key == role_key:
            return False
        if self.role_key == self.name:
            raise RoleExists(
                f"a role was created as {self.name} (a role keeps that name for good, also when renamed or"
                " deleted); pick another name",
                field="name",
            )
        if self.role_key is not None:
            raise RoleExists(f"a role named {self.name} already exists", field="name")
        self._reclaimed(role_key=role_key)
        return True

    @event("Reclaimed")
    def _reclaimed(self, role_key: str) -> None:
        self.role_key = role_key

    def release(self, role_key: str) -> bool:
        """Free the name, which `role_key` no longer carries; a role's key stays with it (False)."""
        if self.role_key != role_key or self.name == role_key:
            return False
        self._released(role_key=role_key)
        return True

    @event("Released")
    def _released(self, role_key: str) -> None:
        self.role_key = None


PERMISSION_STREAM = "permission"


def permission_uuid(name: str) -> UUID:
    return uuid5(NAMESPACE_URL, f"charter:permission:{name}")


class Permission(Aggregate):
    """A permission `resource:action` known to the catalog (roles may also hold wildcards)."""

    @staticmethod
    def create_id(name: str) -> UUID:
        return permission_uuid(name)

    @event("Defined")
    def __init__(self, name: str, description: str) -> None:
        self.name = name
        self.description = description

    @classmethod
    def define(cls, name: str, description: str) -> "Permission":
        check_permission(name)
        if "*" in name:
            raise InvalidPermission("a catalog permission names one resource and one action, without '*'", field="name")
        return cls(name=name, description=description)
