"""Setup of `charter bench sites`, all through the application bus (the handlers a request would run):
install the base and spare plugins, create one site per client, and activate every base plugin at
every site (dependencies first)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from application.commands import InstallPlugin
from application.context import CommandContext
from application.errors import ConcurrencyError
from application.sites.commands import ActivateExtension, CreateSite
from ops.bench.sites.fleet import (
    SOURCE,
    activation_order,
    base_id,
    base_manifest,
    configuration,
    site_id,
    spare_manifest,
    tiers,
)

CTX = CommandContext(actor="bench")
Execute = Callable[[Any, CommandContext], Awaitable[Any]]


async def stubborn(execute: Execute, command: Any) -> None:
    """Setup only: a command that lost more races than the bus retries is simply run again."""
    for _ in range(20):
        try:
            await execute(command, CTX)
            return
        except ConcurrencyError:
            await asyncio.sleep(0.01)
    await execute(command, CTX)


async def in_parallel(execute: Execute, commands: Iterable[Any], width: int, tick: Callable[[], None]) -> None:
    queue = list(commands)[::-1]

    async def worker() -> None:
        while queue:
            await stubborn(execute, queue.pop())
            tick()

    await asyncio.gather(*(worker() for _ in range(max(1, width))))


def installs(extensions: int, sites: int, spares: int) -> list[InstallPlugin]:
    base = [InstallPlugin(manifest=base_manifest(i, extensions), source=SOURCE, config=configuration(i)) for i in range(extensions)]
    spares = [
        InstallPlugin(manifest=spare_manifest(s, k, extensions), source=SOURCE, config=configuration(k))
        for s in range(sites) for k in range(spares)
    ]
    return base + spares


async def set_up(
    execute: Execute, extensions: int, sites: int, spares: int, width: int, tick: Callable[[str], None]
) -> None:
    """Plugins installed `width` at a time (tiers in order: a dependency is installed before its
    dependents; then `spares` per site), then the sites, each activating the `extensions` base plugins one
    after the other, all sites at once."""
    commands = installs(extensions, sites, spares)
    chunks = [commands[tier.start:tier.stop] for tier in tiers(extensions)] + [commands[extensions:]]
    for chunk in chunks:
        await in_parallel(execute, chunk, width, lambda: tick("install"))
    for s in range(sites):
        await stubborn(execute, CreateSite(site_id=site_id(s), name=f"Bench site {s}"))

    async def activate_all(s: int) -> None:
        for index in activation_order(s, extensions):
            command = ActivateExtension(site_id=site_id(s), plugin_id=base_id(index), configuration=configuration(index + s))
            await stubborn(execute, command)
            tick("activate")

    await asyncio.gather(*(activate_all(s) for s in range(sites)))
