"""The access cache of another replica (an `Authority` that hears of changes only through its refresh)
follows the access events: grants, revocations, role changes, deactivations are seen at its next refresh,
which reads the events after its cursor, never every user and grant again."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from application.context import CommandContext
from application.identity.handlers import (
    ActivateUser, CreateRole, DeactivateUser, DeleteRole, GrantRole, RegisterUser, RevokeRole, UpdateRole,
)
from infrastructure.identity.access_cache import Authority
from infrastructure.settings import Settings
from interfaces.app import create_app, route_permissions
from interfaces.runtime import bootstrap, start_runtime, stop_runtime

CTX = CommandContext(actor="test")


@pytest.fixture
async def runtime(fresh_database_url: str, tmp_path: Path) -> AsyncIterator[Any]:
    settings = Settings(database_url=fresh_database_url, data_dir=tmp_path, log_level="warning", poll_interval=0.05)
    started = await start_runtime(settings)
    try:
        await bootstrap(started, route_permissions(create_app(settings)))
        yield started
    finally:
        await stop_runtime(started)


async def replica_of(runtime: Any) -> Authority:
    replica = Authority(runtime.authority.tokens, None, pool=runtime.pool)
    await replica.refresh()
    return replica


async def run(runtime: Any, command: Any) -> str:
    return (await runtime.execute(command, CTX)).stream_id.split(":", 1)[1]


async def test_every_access_change_is_seen_at_the_next_refresh(runtime: Any) -> None:
    user = await run(runtime, RegisterUser(email="follow@access.test", password="a-password-to-follow"))
    replica = await replica_of(runtime)
    assert replica.cursor is not None and replica.is_active(user)

    role = await run(runtime, CreateRole(name="follow-ops", permissions=["plugins:read"]))
    await run(runtime, GrantRole(user_id=user, role=role, site_id="site-a"))
    version = replica.version
    await replica.refresh()
    assert replica.roles[role] == ["plugins:read"]
    assert (role, "site-a") in replica.grants[user] and replica.version > version
    assert replica.access_for(user, replica.grants[user]).sites_for("plugins:read") == {"site-a"}

    await run(runtime, UpdateRole(role_id=role, permissions=["plugins:read", "tasks:read"]))
    await replica.refresh()
    assert sorted(replica.roles[role]) == ["plugins:read", "tasks:read"]

    await run(runtime, RevokeRole(user_id=user, role=role, site_id="site-a"))
    await replica.refresh()
    assert (role, "site-a") not in replica.grants[user]
    assert replica.changed_at[user] > 0  # a token minted before the revocation no longer speaks for it

    await run(runtime, DeactivateUser(user_id=user))
    await replica.refresh()
    assert not replica.is_active(user)
    await run(runtime, ActivateUser(user_id=user))
    await replica.refresh()
    assert replica.is_active(user)

    await run(runtime, DeleteRole(role_id=role))
    await replica.refresh()
    assert role not in replica.roles


async def test_a_refresh_with_nothing_new_reads_no_user(runtime: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    replica = await replica_of(runtime)
    loads = []
    monkeypatch.setattr(replica, "_load", lambda: loads.append(1))  # would fail if awaited
    version = replica.version
    await replica.refresh()
    assert loads == [] and replica.version == version  # nothing changed: nobody is woken
