"""What the benchmark smoke tests share: running a bench outside pytest-asyncio's loop, and the
throw-away databases a bench leaves (it must leave none)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

import asyncpg

from ops.bench.postgres import DATABASE_PREFIX


async def bench_databases(dsn: str) -> set[str]:
    """The bench databases this test process made and did not drop (other runs on a shared server have
    their own: the pid is part of the name, ops/bench/postgres.py `database_name`)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database WHERE starts_with(datname, $1)",
                                f"{DATABASE_PREFIX}{os.getpid()}_")
        return {r["datname"] for r in rows}
    finally:
        await conn.close()


def in_thread(fn: Callable[..., Any], *args: Any, timeout: float = 120) -> Any:
    """Run `fn` in a thread of its own: the benchmarks start event loops (and processes) of their own."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=timeout)
    assert not thread.is_alive(), f"bench did not finish within {timeout:g} s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")
