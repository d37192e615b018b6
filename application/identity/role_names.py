"""Role names from the log: which role a name belongs to, and the claims and releases of names that
are appended with a role's own events (see `domain.identity.role.RoleName`). No read model is asked,
so a command decides the same whether or not the projectors have caught up."""

from __future__ import annotations

from typing import Any

from application.unit import Loaded, Repository
from domain.identity.access import ROLE_NAME, check_role_name
from domain.identity.errors import RoleExists
from domain.identity.role import NAME_STREAM, Role, RoleName, role_name_uuid, role_uuid
from domain.identity.role import STREAM_TYPE as ROLE_STREAM


async def load_role_name(repository: Repository, name: str) -> Loaded[RoleName]:
    return await repository.load(RoleName, NAME_STREAM, name, role_name_uuid(name))


async def role_key_of(repository: Repository, role: str) -> str:
    """The key of the role called `role` (its current name or its key), from the name's stream; `role`
    itself when no role holds that name (a role made before names were claimed is found by its key)."""
    if not ROLE_NAME.fullmatch(role):
        return role
    name = (await load_role_name(repository, role)).aggregate
    return name.role_key if name is not None and name.role_key is not None else role


async def claim_name(repository: Repository, name: str, key: str) -> Loaded[RoleName]:
    """The stream of `name`, given to the role `key` (RoleExists when another role holds it)."""
    check_role_name(name)
    loaded = await load_role_name(repository, name)
    if loaded.aggregate is not None:
        loaded.aggregate.claim(key)
    elif name != key and (await repository.load(Role, ROLE_STREAM, name, role_uuid(name))).version:
        # a role created as `name` before names were claimed: the name stays that role's
        raise RoleExists(f"a role was created as {name} before; pick another name", field="name")
    else:
        loaded.aggregate = RoleName(name=name, role_key=key)
    return loaded


async def release_name(repository: Repository, name: str, key: str) -> list[tuple[Loaded[Any], None]]:
    """The stream of `name`, freed by the role `key` (nothing when the role keeps it, or none was claimed)."""
    loaded = await load_role_name(repository, name)
    return [(loaded, None)] if loaded.aggregate is not None and loaded.aggregate.release(key) else []
