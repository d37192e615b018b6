"""Schedulers in separate processes racing on one database: one run per tick, recovery of a killed
replica's run, pause between ticks, catch-up after downtime."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest

from application.tasks.commands import PauseTask, ResumeTask
from tests.integration.tasks.kit import RetryPolicy, Tasks, of_type, start_replicas



async def wait_until(check, timeout: float, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(every)


async def test_three_replicas_fire_each_tick_exactly_once(fresh_database_url: str) -> None:
    async with Tasks(fresh_database_url) as tasks:
        await tasks.create("race", every=0.1)
        replicas = await start_replicas(fresh_database_url, ["r1", "r2", "r3"])
        try:
            await asyncio.sleep(30)
        finally:
            for replica in replicas:
                replica.stop()
        await asyncio.sleep(0.5)
        events = await tasks.runs("race")
    requested = of_type(events, "Requested")
    ticks = Counter(e["payload"]["tick"] for e in requested)
    assert len(requested) >= 250
    assert max(ticks.values()) == 1  # one run per tick
    assert len(of_type(events, "Started")) == len(requested)  # each started once, by one replica
    assert Counter(e["stream_id"] for e in of_type(events, "Started")).most_common(1)[0][1] == 1
    # no tick missed between the first and the last while the replicas ran
    times = sorted(datetime.fromisoformat(t) for t in ticks)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert max(gaps) <= timedelta(milliseconds=100), max(gaps)
    assert len(of_type(events, "Succeeded")) >= len(requested) - 3  # the last ones may be cut by the stop
    winners = Counter(e["payload"]["replica"] for e in of_type(events, "Started"))
    print(f"\n{len(requested)} ticks, won per replica: {dict(winners)}")


async def test_a_killed_replicas_run_times_out_and_is_retried(fresh_database_url: str, tmp_path) -> None:
    marker = str(tmp_path / "slept")
    async with Tasks(fresh_database_url) as tasks:
        await tasks.create("killed", every=5.0, action="test.sleep", payload={"seconds": 30, "marker": marker},
                           timeout=2.0, retry=RetryPolicy(max_attempts=3, backoff=0.1))
        replicas = await start_replicas(fresh_database_url, ["k1", "k2"])
        try:
            async def started() -> bool:
                return bool(of_type(await tasks.runs("killed"), "Started"))

            await wait_until(started, 10)
            first = of_type(await tasks.runs("killed"), "Started")[0]
            holder = next(r for r in replicas if r.name == first["payload"]["replica"])
            holder.kill()
            run_stream = first["stream_id"]

            async def succeeded() -> bool:
                return any(e["stream_id"] == run_stream for e in of_type(await tasks.runs("killed"), "Succeeded"))

            await wait_until(succeeded, 15)
            events = [e for e in await tasks.runs("killed") if e["stream_id"] == run_stream]
            names = [e["event_type"].split(".")[1] for e in events]
            assert names == ["Requested", "Started", "TimedOut", "Retried", "Started", "Succeeded"]
            survivor = next(r for r in replicas if r is not holder)
            assert events[2]["payload"]["replica"] == holder.name
            assert events[4]["payload"]["replica"] == survivor.name and events[4]["payload"]["attempt"] == 2

            async def next_tick_fine() -> bool:
                done = of_type(await tasks.runs("killed"), "Succeeded")
                return any(e["stream_id"] != run_stream and e["payload"]["attempt"] == 1 for e in done)

            await wait_until(next_tick_fine, 10)
        finally:
            for replica in replicas:
                replica.stop()


async def test_pause_between_ticks_stops_runs_until_resumed(fresh_database_url: str) -> None:
    async with Tasks(fresh_database_url) as tasks:
        await tasks.create("paused", every=0.2)
        replicas = await start_replicas(fresh_database_url, ["p1", "p2"])
        try:
            await asyncio.sleep(2)
            await tasks.do(PauseTask(task_id="paused"))

            async def seen_paused() -> bool:
                return await tasks.status("paused") == "paused"

            await wait_until(seen_paused, 5)
            await asyncio.sleep(0.5)  # one catalog refresh (0.2 s) with margin
            before = len(of_type(await tasks.runs("paused"), "Requested"))
            assert before >= 5
            paused_at = datetime.now().astimezone()
            await asyncio.sleep(2)
            assert len(of_type(await tasks.runs("paused"), "Requested")) == before
            resumed_at = datetime.now().astimezone()  # before the resume commits: a tick after it may run
            await tasks.do(ResumeTask(task_id="paused"))
            await asyncio.sleep(2)
            ticks = [datetime.fromisoformat(e["payload"]["tick"]) for e in of_type(await tasks.runs("paused"), "Requested")]
            assert len(ticks) > before  # runs again
            assert not [t for t in ticks if paused_at < t < resumed_at]  # the paused ticks are not caught up
        finally:
            for replica in replicas:
                replica.stop()


async def test_catch_up_policies_after_downtime(fresh_database_url: str) -> None:
    async with Tasks(fresh_database_url) as tasks:
        for policy in ("skip", "once", "all"):
            await tasks.create(f"down-{policy}", every=0.5, catch_up=policy)
        await asyncio.sleep(3.2)  # no replica runs: about six ticks go by
        replicas = await start_replicas(fresh_database_url, ["c1"])
        try:
            await asyncio.sleep(2)
        finally:
            for replica in replicas:
                replica.stop()
        caught = {}
        for policy in ("skip", "once", "all"):
            requested = of_type(await tasks.runs(f"down-{policy}"), "Requested")
            caught[policy] = sum(e["payload"]["trigger"] == "catch-up" for e in requested)
            assert sum(e["payload"]["trigger"] == "schedule" for e in requested) >= 2  # then on schedule
        assert caught["skip"] == 0
        assert caught["once"] == 1
        assert caught["all"] >= 5
