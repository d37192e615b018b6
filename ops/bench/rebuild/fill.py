"""The log `charter bench rebuild` replays: installs, lifecycle events on existing plugins and role
changes, recorded by the domain aggregates themselves (so every payload has its real shape) and appended
through Charter's group-committing event store by concurrent writers, each owning its own streams."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

from application.ports import AppendRequest
from application.unit import Loaded
from domain.errors import DomainError
from domain.identity.role import Permission, Role
from domain.identity.user import User
from domain.plugins.plugin import Plugin
from infrastructure.eventlog.eventstore import GENESIS, EventStore, create_pool
from infrastructure.eventlog.repository import to_new_events

WRITERS = 16
METADATA = {"actor": "bench", "request_id": "bench-rebuild"}
PERMISSIONS = ["plugins:read", "plugins:write", "plugins:admin", "events:read", "users:read", "roles:read"]
ROLES = ["viewer", "operator", "maintainer", "auditor", "deployer", "support"]
SITES = [None, "site-a", "site-b", "site-c"]
# Lifecycle operations on existing plugins, by weight; installs of new plugins are `INSTALL_SHARE` of
# the operations, role grants and revokes `ROLE_SHARE`.
LIFECYCLE = {"restart": 25, "reload": 15, "configure": 20, "disable": 8, "enable": 8, "update": 12, "rollback": 4,
             "uninstall": 1, "reinstall": 1}  # fmt: skip
INSTALL_SHARE = 0.05
ROLE_SHARE = 0.2


def manifest(plugin_id: str, version: str, base: str | None) -> dict[str, Any]:
    return {
        "id": plugin_id,
        "name": plugin_id.replace("-", " ").title(),
        "version": version,
        "description": f"Benchmark plugin {plugin_id}",
        "category": "base" if base is None else "leaf",
        "tags": ["bench", plugin_id[:6]],
        "capabilities": ["api"],
        "dependencies": {base: ">=1.0"} if base else {},
        "config_schema": {"type": "object", "properties": {"level": {"type": "integer"}}},
    }


class Writer:
    """One concurrent writer: its own plugins and users, their aggregates kept in memory between appends."""

    def __init__(self, index: int, store: EventStore, rng: random.Random) -> None:
        self.index, self.store, self.rng = index, store, rng
        self.plugins: list[Loaded[Plugin]] = []
        self.users: list[Loaded[User]] = []
        self.installed = 0

    async def save(self, loaded: Loaded[Any]) -> int:
        events = to_new_events(loaded, METADATA)
        if not events:
            return 0
        request = AppendRequest(loaded.stream_id, loaded.version, events, loaded.last_hash)
        await self.store.append_all([request])
        loaded.version, loaded.last_hash = events[-1].stream_version, request.hashes[-1]
        return len(events)

    async def create(self, stream_type: str, key: str, aggregate: Any) -> Loaded[Any]:
        loaded = Loaded(aggregate, f"{stream_type}:{key}", stream_type, 0, GENESIS)
        await self.save(loaded)
        return loaded

    async def install(self) -> int:
        self.installed += 1
        plugin_id = f"w{self.index}-p{self.installed}"
        bases = [p.aggregate.plugin_id for p in self.plugins[:20]]
        base = self.rng.choice(bases) if bases and self.rng.random() < 0.7 else None
        plugin = Plugin(plugin_id=plugin_id, manifest=manifest(plugin_id, "1.0.0", base), source={"kind": "bench"},
                        config={"level": 1}, enabled=self.rng.random() < 0.5)  # fmt: skip
        self.plugins.append(await self.create("plugin", plugin_id, plugin))
        return 1

    async def register(self, number: int) -> int:
        user = User(email=f"user{self.index}-{number}@bench.example", full_name=f"Bench User {number}",
                    password_hash="$argon2id$bench", active=True)  # fmt: skip
        self.users.append(await self.create("user", str(user.id), user))
        return 1

    async def lifecycle(self) -> int:
        loaded = self.rng.choice(self.plugins)
        plugin, rng = loaded.aggregate, self.rng
        operation = rng.choices(list(LIFECYCLE), weights=list(LIFECYCLE.values()))[0]
        try:
            match operation:
                case "restart":
                    plugin.restart("bench")
                case "reload":
                    plugin.reload("bench")
                case "configure":
                    plugin.configure({"level": rng.randrange(100)}, ["level"])
                case "disable":
                    plugin.disable(f"incident {rng.randrange(1000)}")
                case "enable":
                    plugin.enable("fixed")
                case "update":
                    major, minor, patch = (int(x) for x in plugin.current_version.split("."))
                    base = next(iter(plugin.manifest_data.get("dependencies", {})), None)
                    version = f"{major}.{minor}.{patch + 1}"
                    plugin.update(manifest(plugin.plugin_id, version, base), {"kind": "bench", "ref": version}, plugin.config)
                case "rollback":
                    plugin.roll_back(None, plugin.config)
                case "uninstall":
                    plugin.uninstall("bench", forced=True, cleanup_data=rng.random() < 0.5)
                case "reinstall":
                    plugin.reinstall(plugin.manifest_data, plugin.source, plugin.config, True)
        except DomainError:
            plugin.collect_events()  # nothing was recorded; the operation did not apply to this state
            return 0
        return await self.save(loaded)

    async def role_change(self, roles: list[str]) -> int:
        loaded = self.rng.choice(self.users)
        user = loaded.aggregate
        if user.grants and self.rng.random() < 0.4:
            grant = self.rng.choice(user.grants)
            user.revoke_role(grant.role, grant.site_id)
        else:
            user.grant_role(self.rng.choice(roles), self.rng.choice(SITES))
        return await self.save(loaded)


async def fill(dsn: str, events: int, tick: Callable[[int], None], seed: int = 17) -> dict[str, int]:
    """Append about `events` mixed events to the (migrated) database; returns events per stream type."""
    pool = await create_pool(dsn, min_size=2, max_size=8)
    store = EventStore(pool, writers=2, max_batch=128)
    await store.start()
    done = 0
    try:
        first = Writer(0, store, random.Random(seed))
        for name in PERMISSIONS:
            done += await first.save(Loaded(Permission.define(name, name), f"permission:{name}", "permission", 0, GENESIS))
        for name in ROLES:
            role = Role.create(name, f"the {name}s", first.rng.sample(PERMISSIONS, 3))
            done += await first.save(Loaded(role, f"role:{name}", "role", 0, GENESIS))
        writers = [first, *(Writer(i, store, random.Random(seed + i)) for i in range(1, WRITERS))]
        plugins_each = max(2, events // 100 // WRITERS)
        users_each = max(1, events // 400 // WRITERS)
        budget = events - done

        async def write(writer: Writer) -> None:
            nonlocal done
            for n in range(plugins_each):
                done += await writer.install()
            for n in range(users_each):
                done += await writer.register(n)
            share = budget // WRITERS + (1 if writer.index < budget % WRITERS else 0)
            written = plugins_each + users_each
            while written < share:
                draw = writer.rng.random()
                if draw < INSTALL_SHARE:
                    count = await writer.install()
                elif draw < INSTALL_SHARE + ROLE_SHARE:
                    count = await writer.role_change(ROLES)
                else:
                    count = await writer.lifecycle()
                written += count
                done += count
                tick(done)

        await asyncio.gather(*(write(w) for w in writers))
        rows = await pool.fetch("SELECT stream_type, count(*) AS n FROM events GROUP BY stream_type ORDER BY 1")
        return {r["stream_type"]: r["n"] for r in rows}
    finally:
        await store.stop()
        await pool.close()
