"""The HTTP load the read benchmarks share (`bench auth`, `bench read`): keep-alive HTTP/1.1 clients on
raw asyncio streams (one request in flight per connection), one measured phase at a time, and a side's
summary over its phases, with the CPU used by the clients, the loaded server and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from rich.progress import Progress

from ops.bench.common import Cores, Meter, cpu_seconds, latency_summary, tree_cpu_seconds

HOST = "127.0.0.1"


def request_bytes(port: int, path: str, token: str | None, agent: str = "charter-bench") -> bytes:
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}", "Accept: application/json", f"User-Agent: {agent}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response: status and body (Content-Length or chunked)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at >= 0:
        end = lower.index(b"\r\n", at + 2)
        return status, await reader.readexactly(int(lower[at + 17 : end]))
    if b"transfer-encoding: chunked" in lower:
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
            body += await reader.readexactly(size + 2)
            if size == 0:
                return status, bytes(body)
    return status, b""


@dataclass
class PhaseResult:
    side: str
    round: int
    requests: int
    seconds: float
    rate: float
    errors: int
    first_error: str | None
    latency_ms: dict[str, float] | None
    cpu: dict[str, float | None] = field(default_factory=dict)  # cores: bench clients, server, PostgreSQL, machine
    latencies: list[float] = field(default_factory=list, repr=False)


async def run_phase(
    port: int, server_pids: list[int], side: str, round_: int, title: str, requests_: list[bytes], clients: int,
    warmup: float, seconds: float, progress: Progress, pg_pid: int | None,
) -> PhaseResult:
    """`clients` connections to `port`, each sending the requests of `requests_` in turn, for `warmup`
    then `seconds` measured. `server_pids`: the processes whose CPU is the server's."""
    done = 0
    errors: list[str] = []
    latencies: list[float] = []
    measuring = False
    running = True
    perf = time.perf_counter

    async def client(offset: int) -> None:
        nonlocal done
        reader, writer = await asyncio.open_connection(HOST, port)
        turn = offset
        try:
            while running:
                request = requests_[turn % len(requests_)]
                turn += 1
                started = perf()
                writer.write(request)
                status, body = await read_response(reader)
                if status != 200:
                    errors.append(f"{status} {body[:200]!r}")
                    await asyncio.sleep(0.01)
                    continue
                done += 1
                if measuring:
                    latencies.append(perf() - started)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            if running:
                errors.append(repr(exc))
        finally:
            writer.close()

    meter = Meter(progress, title, "req", warmup, seconds)
    tasks = [asyncio.create_task(client(i)) for i in range(clients)]
    meter.restart_clock()
    warm_until = time.monotonic() + warmup
    while time.monotonic() < warm_until:
        await asyncio.sleep(0.2)
        meter.tick(done)
        for task in tasks:
            if task.done() and task.exception():
                raise task.exception()  # type: ignore[misc]
    cores = Cores({
        "server": lambda: _sum(cpu_seconds(pid) for pid in server_pids),
        "postgres": lambda: tree_cpu_seconds(pg_pid),
    })
    meter.begin(done)
    measuring = True
    end_at = time.monotonic() + seconds
    while (left := end_at - time.monotonic()) > 0:
        await asyncio.sleep(min(0.2, left))
        meter.tick(done)
    measuring = False
    requests, elapsed = meter.end(done)
    server_cores = cores.read()
    running = False
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    cpu: dict[str, float | None] = {
        "clients": meter.cpu.get("process_cores"),
        "server": server_cores["server"],
        "postgres": server_cores["postgres"],
        "machine_busy": meter.cpu.get("machine_busy_cores"),
        "machine_idle": meter.cpu.get("machine_idle_cores"),
    }
    result = PhaseResult(
        side, round_, requests, elapsed, requests / elapsed, len(errors), errors[0] if errors else None,
        latency_summary(latencies), cpu, latencies,
    )
    progress.update(
        meter.task,
        completed=warmup + seconds,
        status=f"[bold]{result.rate:,.0f} req/s[/bold] over {elapsed:.1f}s ({requests:,} requests)",
    )
    return result


def _sum(values: Any) -> float | None:
    found = list(values)
    return None if not found or any(v is None for v in found) else sum(found)


def side_summary(phases: list[PhaseResult]) -> dict[str, Any]:
    requests = sum(p.requests for p in phases)
    seconds = sum(p.seconds for p in phases)
    rate = requests / seconds if seconds else 0.0

    def mean(key: str) -> float | None:
        values = [p.cpu.get(key) for p in phases]
        if any(v is None for v in values) or not values:
            return None
        return round(sum(v * p.seconds for v, p in zip(values, phases, strict=True)) / seconds, 3)  # type: ignore[operator]

    cpu = {key: mean(key) for key in ("clients", "server", "postgres", "machine_busy", "machine_idle")}
    per_request = {
        f"{key}_us": round(value / rate * 1e6, 1) if value is not None and rate else None
        for key, value in cpu.items()
        if key in ("clients", "server", "postgres")
    }
    return {
        "rate": rate,
        "requests": requests,
        "seconds": round(seconds, 3),
        "errors": sum(p.errors for p in phases),
        "first_error": next((p.first_error for p in phases if p.first_error), None),
        "latency_ms": latency_summary([x for p in phases for x in p.latencies]),
        "phase_rates": [round(p.rate, 1) for p in phases],
        "cpu_cores": cpu,
        "cpu_per_request": per_request,
    }
