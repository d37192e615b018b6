"""The Role aggregate: a named bundle of permissions. Built-in roles cannot be renamed, deleted or given
other permissions (so nobody can widen `viewer` into `admin`, nor empty `admin`)."""

from __future__ import annotations

from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.identity.access import BUILTIN_ROLES, check_permission, check_role_name

from domain.identity.errors import InvalidPermission
from domain.identity.errors import RoleProtected, RoleDeleted

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

    def delete(self) -> None:
        self.check_editable()
        self._deleted()

    @event("Deleted")
    def _deleted(self) -> None:
        self.deleted = True


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
