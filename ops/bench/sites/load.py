"""The measured phases of `charter bench sites`, on one runtime and with the same number of tasks:
(a) InstallPlugin of new plugins; (b) ActivateExtension at sites running `extensions` extensions, each
task at its own site activating spare plugins not active there yet (the site grows by one extension per
activation); (c) DeactivateExtension of what (b) activated, so the next round starts from the same
sites (measured and reported, not part of the ratio)."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

from application.commands import InstallPlugin
from application.sites.commands import ActivateExtension, DeactivateExtension
from ops.bench.append.phase import PhaseResult
from ops.bench.common import Meter, latency_summary
from ops.bench.sites.fleet import SOURCE, configuration, install_manifest, site_id, spare_id
from ops.bench.sites.setup import CTX, Execute

# A client's next command (client index, its step number from 1), or None when it has no more to do.
Step = Callable[[int, int], Any]


async def drive(meter: Meter, count: Callable[[], int], done: Callable[[], bool], warm_ops: int | None) -> tuple[int, float]:
    """Warm up (for the meter's warm-up, or until `warm_ops` operations), then measure until the window's
    time is up or every client has finished; returns (operations, seconds) of the window."""
    meter.restart_clock()
    warm_until = time.monotonic() + meter.warmup
    while time.monotonic() < warm_until and not done() and (warm_ops is None or count() < warm_ops):
        await asyncio.sleep(0.05)
        meter.tick(count())
    meter.begin(count())
    end_at = time.monotonic() + meter.seconds
    while (left := end_at - time.monotonic()) > 0 and not done():
        await asyncio.sleep(min(0.05, left))
        meter.tick(count())
    return meter.end(count())


async def measure(
    execute: Execute, step: Step, clients: int, meter: Meter, warm_ops: int | None = None, **fields: Any
) -> PhaseResult:
    """`clients` tasks running `step` until the window closes; operations = commands completed.
    `done` (in the result's extra, not the report) holds each client's completed commands."""
    counts = [0] * clients
    done: list[list[Any]] = [[] for _ in range(clients)]
    finished = [False] * clients
    latencies: list[float] = []
    errors: list[BaseException] = []
    stop = False

    async def client(i: int) -> None:
        for n in itertools.count(1):
            command = step(i, n)
            if stop or command is None:
                break
            started = time.perf_counter()
            try:
                await execute(command, CTX)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(exc)
                await asyncio.sleep(0.01)
                continue
            counts[i] += 1
            done[i].append(command)
            if meter.measuring:
                latencies.append(time.perf_counter() - started)
        finished[i] = True

    tasks = [asyncio.create_task(client(i), name=f"bench-sites-{i}") for i in range(clients)]
    try:
        operations, elapsed = await drive(meter, lambda: sum(counts), lambda: all(finished), warm_ops)
    finally:
        stop = True
        await asyncio.gather(*tasks, return_exceptions=True)
    result = PhaseResult(
        **fields, method=f"application.execute, {clients} tasks", unit=meter.unit, rate=operations / elapsed,
        operations=operations, seconds=elapsed, clients=clients, errors=len(errors),
        first_error=repr(errors[0]) if errors else None, latency_ms=latency_summary(latencies), cpu=meter.cpu,
        extra={"completed": counts},
    )
    meter.done(result)
    result.extra["done"] = done
    return result


async def phase_install(execute: Execute, clients: int, warmup: float, seconds: float, progress: Any, label: str,
                        numbers: itertools.count[int]) -> PhaseResult:
    def step(_client: int, _n: int) -> InstallPlugin:
        n = next(numbers)
        return InstallPlugin(manifest=install_manifest(n), source=SOURCE, config=configuration(n))

    meter = Meter(progress, f"(a) InstallPlugin {label}", "commands", warmup, seconds)
    return await measure(execute, step, clients, meter, key="install", name="(a) InstallPlugin",
                         title="InstallPlugin of a new plugin (site rules, schema and configuration, no dependencies)")


def owned(client: int, clients: int, sites: int) -> list[int]:
    """The sites client i works at: i, i + clients, i + 2 * clients, ..."""
    return list(range(client, sites, clients))


async def phase_activate(execute: Execute, clients: int, sites: int, extensions: int, spares: int, warmup: float,
                         seconds: float, progress: Any, label: str) -> PhaseResult:
    """Client i activates, at each of its sites in turn, that site's next spare plugin, until the window
    closes or the spares run out; the sites grow by one extension per activation."""

    def step(client: int, n: int) -> ActivateExtension | None:
        mine = owned(client, clients, sites)
        site, spare = mine[(n - 1) % len(mine)], (n - 1) // len(mine)
        if spare >= spares:
            return None
        return ActivateExtension(site_id=site_id(site), plugin_id=spare_id(site, spare), configuration=configuration(n),
                                 reason="bench")

    meter = Meter(progress, f"(b) ActivateExtension {label}", "commands", warmup, seconds)
    result = await measure(execute, step, clients, meter, warm_ops=sites * spares // 5, key="activate",
                           name="(b) ActivateExtension",
                           title=f"ActivateExtension of a plugin new to a site running {extensions} extensions or more "
                           "(the full validation policy against all of them, the configuration checked and hashed)")
    grown = [0] * sites
    for command in (c for commands in result.extra["done"] for c in commands):
        grown[int(command.site_id.rsplit("-", 1)[1])] += 1
    result.extra["exhausted"] = max(grown) >= spares
    result.extra["extensions_at_end"] = max(grown) + extensions
    return result


async def phase_deactivate(execute: Execute, activated: PhaseResult, progress: Any, label: str) -> PhaseResult:
    """Every extension (b) activated, deactivated again by the client that activated it (newest first)."""
    pending = [[c for c in commands[::-1]] for commands in activated.extra["done"]]

    def step(client: int, n: int) -> DeactivateExtension | None:
        if n > len(pending[client]):
            return None
        command = pending[client][n - 1]
        return DeactivateExtension(site_id=command.site_id, plugin_id=command.plugin_id, reason="bench")

    meter = Meter(progress, f"(c) DeactivateExtension {label}", "commands", 0.0, 3600.0)
    return await measure(execute, step, len(pending), meter, key="deactivate", name="(c) DeactivateExtension",
                         title="DeactivateExtension of everything (b) activated (not in the ratio: it restores the sites)")
