"""(5) The floor of `charter bench fanout`: a bare uvloop server (no HTTP, no ASGI, no Charter) writes the
chunk the clients received to as many sockets, read by another process, with nothing else running."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from ops.bench.common import raise_nofile, run_loop


class _Discard(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        pass


def sink_entry(host: str, port: int, count: int, ready: Any, stop: Any) -> None:
    """A process holding `count` connections that read and discard everything (the floor's clients)."""
    raise_nofile()
    run_loop(_sink(host, port, count, ready, stop))


async def _sink(host: str, port: int, count: int, ready: Any, stop: Any) -> None:
    loop = asyncio.get_running_loop()
    transports = []
    for _ in range(count):
        transport, _ = await loop.create_connection(_Discard, host, port)
        transports.append(transport)
    ready.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    for transport in transports:
        transport.close()


def raw_floor(clients: int, chunk_bytes: int, passes: int = 40) -> dict[str, Any]:
    """A bare uvloop server (no HTTP, no ASGI, no Charter) writes one `chunk_bytes` chunk to each of
    `clients` sockets, `passes` times, while another process reads them: the CPU one hub flush cannot
    go below on this machine. Measured with nothing else running."""
    return run_loop(_raw_floor(clients, chunk_bytes, passes))


async def _raw_floor(clients: int, chunk_bytes: int, passes: int) -> dict[str, Any]:
    import multiprocessing

    mp = multiprocessing.get_context("spawn")
    loop = asyncio.get_running_loop()
    transports: list[asyncio.Transport] = []

    class Peer(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transports.append(transport)  # type: ignore[arg-type]

    server = await loop.create_server(Peer, "127.0.0.1", 0, backlog=4096)
    port = server.sockets[0].getsockname()[1]
    ready, stop = mp.Event(), mp.Event()
    sink = mp.Process(target=sink_entry, args=("127.0.0.1", port, clients, ready, stop), daemon=True)
    sink.start()
    try:
        deadline = time.monotonic() + 120
        while not (ready.is_set() and len(transports) >= clients):
            if time.monotonic() > deadline or not sink.is_alive():
                raise RuntimeError(f"the floor's sink connected {len(transports)} of {clients} sockets")
            await asyncio.sleep(0.05)
        frame = b'id: 1\nevent: Plugin.Restarted\ndata: {"event_id":"' + uuid.uuid4().hex.encode() + b'","payload":{}}\n\n'
        chunk = (frame * (chunk_bytes // len(frame) + 1))[:chunk_bytes]
        walls, cpus = [], []
        for _ in range(passes):
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for transport in transports:
                transport.write(chunk)
            walls.append(time.perf_counter() - wall0)
            cpus.append(time.process_time() - cpu0)
            settle = time.monotonic() + 5
            while any(t.get_write_buffer_size() for t in transports) and time.monotonic() < settle:
                await asyncio.sleep(0.002)
            await asyncio.sleep(0.02)
    finally:
        stop.set()
        sink.join(timeout=10)
        if sink.is_alive():
            sink.terminate()
        server.close()
        for transport in transports:
            transport.close()
    walls.sort()
    cpus.sort()
    return {
        "clients": clients,
        "chunk_bytes": chunk_bytes,
        "passes": passes,
        "pass_ms_p50": round(walls[len(walls) // 2] * 1000, 2),
        "pass_ms_min": round(walls[0] * 1000, 2),
        "us_per_write_wall": round(walls[len(walls) // 2] / clients * 1e6, 2),
        "us_per_write_cpu": round(cpus[len(cpus) // 2] / clients * 1e6, 2),
    }
