"""The command writer of `charter bench fanout` (a process of its own): `RestartPlugin` commands through
the application layer at a steady rate; it is the projector worker too, and with --relay-in writer the relay."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from ops.bench.common import run_loop
from ops.bench.fanout.latency import Acks


def writer_entry(settings: Any, plugins: int, rate: float, counter: Any, control: Any, out: Any, acks: Acks | None = None) -> None:
    try:
        run_loop(_writer(settings, plugins, rate, counter, control, out, acks))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out.put(("error", "writer", repr(exc)))


async def _writer(settings: Any, plugins: int, rate: float, counter: Any, control: Any, out: Any, acks: Acks | None = None) -> None:
    from collections import deque

    from application.commands import InstallPlugin, RestartPlugin
    from application.context import CommandContext
    from infrastructure.telemetry.logging import configure_logging
    from interfaces.runtime import start_runtime, stop_runtime

    configure_logging("warning", json=False)
    runtime = await start_runtime(settings)
    try:
        ctx = CommandContext(actor="bench-fanout")
        ids = [f"fanout-{i:05d}" for i in range(plugins)]
        gate = asyncio.Semaphore(64)

        async def install(pid: str) -> None:
            async with gate:
                manifest = {"id": pid, "name": f"Fan-out bench {pid}", "version": "1.0.0"}
                await runtime.execute(InstallPlugin(manifest=manifest, source={"kind": "bench"}), ctx)

        await asyncio.gather(*(install(pid) for pid in ids))
        out.put(("ready", "writer", plugins))
        message = await asyncio.get_running_loop().run_in_executor(None, control.get)
        if message[0] != "go":
            return
        _, go_at, until = message
        free = deque(ids)
        latencies: list[float] = []
        errors: list[str] = []
        state = {"completed": 0, "busy_skips": 0, "max_in_flight": 0}
        tasks: set[asyncio.Task[None]] = set()

        async def restart(pid: str) -> None:
            started = time.perf_counter()
            try:
                result = await runtime.execute(RestartPlugin(plugin_id=pid, reason="bench"), ctx)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(repr(exc))
            else:
                if acks is not None and result.position:
                    acks.record(result.position, time.time())
                state["completed"] += 1
                counter.value = state["completed"]
                latencies.append(time.perf_counter() - started)
            finally:
                free.append(pid)

        offset = time.monotonic() - time.time()
        start, stop_at = go_at + offset, until + offset
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        issued = 0
        while (now := time.monotonic()) < stop_at:
            due = int((now - start) * rate) + 1
            while issued < due:
                issued += 1
                if not free:
                    state["busy_skips"] += 1  # every plugin has a restart in flight: the writer is behind
                    continue
                task = asyncio.create_task(restart(free.popleft()))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            state["max_in_flight"] = max(state["max_in_flight"], len(tasks))
            await asyncio.sleep(max(0.0, min(start + issued / rate, stop_at) - time.monotonic()))
        writing = time.monotonic() - start
        if tasks:
            await asyncio.wait(set(tasks), timeout=30)
        out.put(
            (
                "done",
                "writer",
                {
                    "issued": issued,
                    "completed": state["completed"],
                    "errors": len(errors),
                    "first_error": errors[0] if errors else None,
                    "busy_skips": state["busy_skips"],
                    "max_in_flight": state["max_in_flight"],
                    "seconds": writing,
                    "latencies": latencies,
                },
            )
        )
    finally:
        await stop_runtime(runtime)
