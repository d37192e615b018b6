"""Every list page comes from one snapshot: its total, its items and has_more agree, also while writers
keep adding to the list (plugins being installed and projected, events appended, roles created)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from cryptography.fernet import Fernet

from application.commands import InstallPlugin
from application.context import CommandContext
from application.identity.handlers import CreateRole, DefinePermission
from infrastructure.eventlog.projector import ensure_projection
from infrastructure.settings import Settings
from interfaces.runtime import Runtime, start_runtime, stop_runtime
from projections import event_log
from projections.identity import queries as identity_queries
from projections.plugins import queries as plugin_catalog

LIMIT = 5
SKIPS = (0, 1, 4, 9, 30)  # 30: beyond the end for most of the run, where the page is empty
INSTALLS = 120
ROLES = 60

Lister = Callable[[int], Awaitable[tuple[int, list[dict[str, Any]]]]]


@pytest.fixture
async def runtime(database_url: str, tmp_path: Path) -> AsyncIterator[Runtime]:
    settings = Settings(
        database_url=database_url,
        data_dir=tmp_path,
        secret_key=Fernet.generate_key().decode(),
        poll_interval=0.05,
        consistency_timeout=10.0,
    )
    started = await start_runtime(settings)
    async with started.pool.acquire() as conn:  # the read models' tables, before any reader asks
        for projection in started.projections.values():
            await ensure_projection(conn, projection)
    yield started
    await stop_runtime(started)


def check_page(total: int, items: list[dict[str, Any]], skip: int) -> None:
    """What one snapshot guarantees: the page holds exactly the rows the total leaves from `skip`."""
    has_more = skip + len(items) < total
    if items:
        assert total >= skip + len(items), f"total {total} with {len(items)} items from {skip}"
    assert len(items) == max(0, min(LIMIT, total - skip)), f"total {total} but {len(items)} items from {skip}"
    assert has_more == (total - skip > LIMIT)


async def keep_reading(lister: Lister, done: asyncio.Event, final: int | None = None) -> set[int]:
    """Page through the list until the writers are done and the list has reached `final` rows (when
    given: a read model catches up after the writes); the totals seen on the way."""
    totals: set[int] = set()
    async with asyncio.timeout(120):
        for skip in itertools.cycle(SKIPS):
            total, items = await lister(skip)
            check_page(total, items, skip)
            totals.add(total)
            if done.is_set() and (final is None or total >= final):
                return totals


async def write_all(writes: list[Callable[[], Awaitable[Any]]], done: asyncio.Event, writers: int = 4) -> None:
    queue = list(reversed(writes))

    async def writer() -> None:
        while queue:
            await queue.pop()()

    try:
        await asyncio.gather(*(writer() for _ in range(writers)))
    finally:
        done.set()


class TestPagesUnderConcurrentWrites:
    async def test_plugin_and_event_pages_agree_with_their_totals_while_plugins_are_installed(
        self, runtime: Runtime
    ) -> None:
        category, actor = f"paging-{uuid4().hex[:8]}", f"pager-{uuid4().hex[:8]}"
        ctx = CommandContext(actor=actor)
        installs = [
            lambda n=n: runtime.execute(
                InstallPlugin(manifest={"id": f"{category}-{n:03d}", "name": f"P{n}", "version": "1.0.0", "category": category}, source={}),
                ctx,
            )
            for n in range(INSTALLS)
        ]
        plugins = plugin_catalog.PluginFilter(category=category)
        events = event_log.EventQuery(actor=actor)
        done = asyncio.Event()

        def plugins_page(sort_order: str) -> Lister:
            return lambda skip: plugin_catalog.list_plugins(
                runtime.pool, plugins, plugin_catalog.Page(skip, LIMIT, "name", sort_order)
            )

        _, *seen = await asyncio.gather(
            write_all(installs, done),
            keep_reading(plugins_page("asc"), done, INSTALLS),
            keep_reading(plugins_page("desc"), done, INSTALLS),
            keep_reading(lambda skip: event_log.list_events(runtime.pool, events, skip, LIMIT), done, INSTALLS),
            keep_reading(lambda skip: event_log.list_events(runtime.pool, events, skip, LIMIT, descending=True), done, INSTALLS),
        )

        for totals in seen:
            assert len(totals) > 3, f"the readers saw the list at rest only ({totals}): the test proves nothing"
        assert max(seen[3]) == INSTALLS

    async def test_role_and_permission_pages_agree_with_their_totals_while_they_are_created(
        self, runtime: Runtime
    ) -> None:
        prefix = f"paging-{uuid4().hex[:8]}"
        creates = [
            write
            for n in range(ROLES)
            for write in (
                lambda n=n: runtime.execute(CreateRole(name=f"{prefix}-{n:03d}"), CommandContext()),
                lambda n=n: runtime.execute(DefinePermission(name=f"{prefix}:thing{n:03d}"), CommandContext()),
            )
        ]
        roles_before, _ = await identity_queries.list_roles(runtime.pool, 0, 1, "name", False)
        done = asyncio.Event()

        _, roles, permissions = await asyncio.gather(
            write_all(creates, done, writers=8),
            keep_reading(
                lambda skip: identity_queries.list_roles(runtime.pool, skip, LIMIT, "name", False), done, roles_before + ROLES
            ),
            keep_reading(
                lambda skip: identity_queries.list_permissions(runtime.pool, prefix, skip, LIMIT, "name", True), done, ROLES
            ),
        )

        for totals in (roles, permissions):
            assert len(totals) > 3, f"the reader saw the list at rest only ({totals}): the test proves nothing"


class TestAPageBeyondTheEnd:
    async def test_is_empty_and_still_tells_the_total(self, runtime: Runtime) -> None:
        category, actor = f"paging-{uuid4().hex[:8]}", f"pager-{uuid4().hex[:8]}"
        for n in range(3):
            manifest = {"id": f"{category}-{n}", "name": f"P{n}", "version": "1.0.0", "category": category}
            result = await runtime.execute(InstallPlugin(manifest=manifest, source={}), CommandContext(actor=actor))
        await runtime.wait_for("plugins", result.position)

        plugins = await plugin_catalog.list_plugins(
            runtime.pool, plugin_catalog.PluginFilter(category=category), plugin_catalog.Page(skip=10, limit=LIMIT)
        )
        events = await event_log.list_events(runtime.pool, event_log.EventQuery(actor=actor), 10, LIMIT)

        assert plugins == (3, [])
        assert events == (3, [])
