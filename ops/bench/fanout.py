"""`charter bench fanout`: commit-to-client latency over SSE, memory per idle client, relay vs raw publish.

One run, on ONE PostgreSQL server and ONE NATS server (CHARTER_DATABASE_URL's / CHARTER_NATS_URL's, or
embedded ones started for the run), in a fresh database `charter_bench_<hex>` and JetStream streams of the
run's own (all removed at the end):

(1) server      ONE Charter server process: uvicorn on `interfaces.app:create_app(settings)` (a subprocess,
                `python -m ops.bench.fanout serve`), with its relay and SSE hub, on a free port. Its
                memory is measured on its own (/proc/<pid>/status VmRSS).
(2) idle        `--sse-clients` SSE clients (raw asyncio protocols speaking a minimal HTTP/1.1, spread
                over `--client-processes` processes) connect to GET /api/v1/events/stream. Server RSS
                before they connect and after they have been connected and idle for a few seconds gives
                the memory per idle client.
(3) load        a separate writer process executes `RestartPlugin` commands on pre-installed plugins
                through the application layer (`runtime.execute`, the real write path) at a steady
                `--rate` for a warm-up and then `--seconds`. Each delivery is timed as client receive
                time - the event's `recorded_at` (same machine clock). A probe process with one more
                SSE client and a core-NATS subscription on the stream splits that latency into stages.
(5) floor       a bare uvloop server (no HTTP, no ASGI, no Charter) writes a chunk of the size the clients
                received in (3) to as many sockets, read by another process, with nothing else running: the
                time one hub flush cannot go below on this machine, beside what the hub's flushes took in
                the window (from the server's /metrics). Run after (3), reported before (4).
(4) relay       K (`--relay-events`) events are appended to the log in big batches; a Relay
                (infrastructure/stream/relay.py) publishes them to a fresh stream with acks; a raw nats-py
                publish_async loop publishes the same subjects, payloads and headers to another fresh
                stream of the same server. Events/s of both and the ratio relay/raw.

Targets: p99 commit-to-client <= 50 ms at 500 events/s with 1,000 clients; <= 30 KiB per idle client;
relay >= 0.8x the raw publish loop. The report is printed and written to `<report>/fanout-<timestamp>.json`
and `.md`.

Set CHARTER_BENCH_PROFILE_SERVER=<file.prof> (or `--profile-server`) to run the server under cProfile
during the measured window of (3) (profiling slows the server down: use it to see where time goes, not
for the numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import asyncpg
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ops.bench.append import (
    Meter,
    bench_server,
    create_database,
    drop_database,
    latency_summary,
    machine_info,
    server_info,
    with_database,
)

from ops.bench.common import ServerProcess, bench_progress, postmaster_pid, tree_cpu_seconds, write_report

P99_TARGET_MS = 50.0
KIB_PER_CLIENT_TARGET = 30.0
RELAY_RATIO_TARGET = 0.8
TARGET_RATE = 500.0
TARGET_CLIENTS = 1000

PROFILE_ENV = "CHARTER_BENCH_PROFILE_SERVER"
SSE_PATH = "/api/v1/events/stream"
HIST_RESOLUTION = 10_000  # buckets per second: 0.1 ms
HIST_BUCKETS = 60 * HIST_RESOLUTION  # up to 60 s; slower deliveries land in the last bucket (max is exact)
_RECORDED_AT = b'"recorded_at":"'
_ROOT = Path(__file__).resolve().parents[2]


# -- small process helpers ----------------------------------------------------------------------------


def _raise_nofile() -> None:
    """1,000 SSE connections need more descriptors than a default soft limit of 1,024."""
    with contextlib.suppress(Exception):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard == resource.RLIM_INFINITY or hard > soft:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))


def _run_loop(coroutine: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)


def rss_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process in KiB, from /proc (psutil when /proc is not there)."""
    try:
        out = {}
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(("VmRSS:", "VmHWM:")):
                out["rss" if line.startswith("VmRSS") else "hwm"] = int(line.split()[1])
        return out
    except OSError:
        with contextlib.suppress(Exception):
            import psutil

            info = psutil.Process(pid).memory_info()
            return {"rss": info.rss // 1024}
    return {}


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (None when it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        with contextlib.suppress(Exception):
            import psutil

            times = psutil.Process(pid).cpu_times()
            return times.user + times.system
    return None






def machine_busy() -> float | None:
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


class CpuWindow:
    """CPU cores used by named processes (and the whole machine) between start() and stop()."""

    def __init__(self, pids: dict[str, int | None], trees: dict[str, int | None] | None = None) -> None:
        self.pids = {k: v for k, v in pids.items() if v}
        self.trees = {k: v for k, v in (trees or {}).items() if v}
        self.before: dict[str, float | None] = {}
        self.started = 0.0

    def _read(self) -> dict[str, float | None]:
        found = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        found.update({name: tree_cpu_seconds(pid) for name, pid in self.trees.items()})
        found["machine"] = machine_busy()
        return found

    def start(self) -> None:
        self.started = time.monotonic()
        self.before = self._read()

    def stop(self) -> dict[str, float]:
        """Cores per process over the window, the whole machine's, and `other`: what none of ours used."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        out = {}
        for name, value in self._read().items():
            then = self.before.get(name)
            if value is not None and then is not None:
                out[name] = round((value - then) / elapsed, 2)
        if "machine" in out:
            out["other"] = round(max(0.0, out["machine"] - sum(v for k, v in out.items() if k != "machine")), 2)
        return out


# -- latency histogram --------------------------------------------------------------------------------


def new_histogram() -> list[int]:
    return [0] * HIST_BUCKETS


def sparse(hist: list[int]) -> dict[int, int]:
    return {i: n for i, n in enumerate(hist) if n}


def hist_summary(buckets: dict[int, int], max_seconds: float) -> dict[str, float] | None:
    """p50/p90/p99/p99.9 (upper bound of the 0.1 ms bucket) and the exact max, in ms."""
    total = sum(buckets.values())
    if not total:
        return None
    ordered = sorted(buckets.items())
    out: dict[str, float] = {"count": total}
    for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("p999", 0.999)):
        rank = max(1, math.ceil(q * total))
        seen = 0
        for bucket, n in ordered:
            seen += n
            if seen >= rank:
                out[name] = round(min((bucket + 1) * 1000 / HIST_RESOLUTION, max_seconds * 1000), 2)
                break
    out["max"] = round(max_seconds * 1000, 2)
    return out


def recorded_epoch(data: bytes, start: int) -> float:
    """The envelope's `recorded_at` (RFC 3339) found after `start`, as epoch seconds (nan when absent)."""
    at = data.find(_RECORDED_AT, start)
    if at < 0:
        return math.nan
    at += len(_RECORDED_AT)
    end = data.find(b'"', at)
    try:
        return datetime.fromisoformat(data[at:end].decode()).timestamp()
    except ValueError:
        return math.nan


_POSITION = b'"position":'
ACK_SLOTS = 1 << 17  # positions kept in the acknowledgement ring (more than a run commits)


def position_of(data: bytes, start: int) -> int:
    """The envelope's `position` found after `start` (-1 when absent)."""
    at = data.find(_POSITION, start)
    if at < 0:
        return -1
    at += len(_POSITION)
    end = at
    while data[end : end + 1].isdigit():
        end += 1
    return int(data[at:end]) if end > at else -1


class Acks:
    """When the writer got each command's result back (its commit acknowledged), by log position: a ring
    in shared memory, written by the writer process, read by the client processes after the run."""

    def __init__(self, mp: Any) -> None:
        self.positions = mp.Array("q", ACK_SLOTS, lock=False)
        self.times = mp.Array("d", ACK_SLOTS, lock=False)

    def record(self, position: int, at: float) -> None:
        slot = position % ACK_SLOTS
        self.positions[slot] = position
        self.times[slot] = at

    def time_of(self, position: int) -> float | None:
        slot = position % ACK_SLOTS
        return self.times[slot] if position > 0 and self.positions[slot] == position else None


# -- SSE clients (in client processes) ----------------------------------------------------------------


class Feed:
    """What the SSE connections of one client process share: window, timestamps, counters. Latencies are
    worked out after the run from each connection's receipts, so the clients spend as little CPU as
    possible while the server is measured."""

    def __init__(self) -> None:
        self.window = (math.inf, math.inf)  # recorded_at range (epoch s) of the measured events
        self.recorded: dict[int, float] = {}  # JetStream sequence -> recorded_at, parsed once per process
        self.positions: dict[int, int] = {}  # JetStream sequence -> log position
        self.parsed_up_to = 0
        self.frames = 0
        self.drops = 0
        self.disconnects = 0
        self.gaps = 0
        self.duplicates = 0
        self.heartbeats = 0
        self.chunks = 0  # reads that carried at least one event frame
        self.event_bytes = 0  # bytes of those reads
        self.stopping = False


class SseConnection(asyncio.Protocol):
    """One SSE client: sends the GET, skips the response head, finds `id:` lines in the chunked body.

    The body is never de-chunked: chunk-size lines cannot contain `\\n\\n` or `\\nid: `, and a frame is only
    looked at once the blank line ending it has arrived, so scanning the raw bytes is exact and cheap. A
    read holding consecutive sequences is kept as one receipt (first, last, receive time); events are
    parsed once per process, by the first connection that sees them.
    """

    def __init__(self, feed: Feed, request: bytes, loop: asyncio.AbstractEventLoop) -> None:
        self.feed = feed
        self.request = request
        self.ready: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.buf = b""
        self.streaming = False
        self.last_seq = 0
        self.firsts = array("q")
        self.lasts = array("q")
        self.times = array("d")
        self.dropped = False
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        if self.buf:
            data = self.buf + data
        if not self.streaming:
            head = data.find(b"\r\n\r\n")
            if head < 0:
                self.buf = data
                return
            status = data[: data.find(b"\r\n")]
            if not status.startswith(b"HTTP/1.1 200"):
                self.buf = b""
                if not self.ready.done():
                    self.ready.set_exception(ConnectionError(f"SSE answered {status.decode(errors='replace')!r}"))
                self.close()
                return
            self.streaming = True
            data = data[head + 2 :]  # keep one "\r\n" so a frame at the very start follows a newline
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self.buf = data
            return
        end = cut + 2
        self.buf = data[cut + 1 :]
        feed = self.feed
        if not self.ready.done() and b": connected" in data:
            self.ready.set_result(None)
        pos = data.find(b"\nid: ", 0, end)
        if pos < 0:
            if b": heartbeat" in data:
                feed.heartbeats += 1
            elif b"too far behind" in data:
                self._dropped()
            return
        first = int(data[pos + 5 : data.find(b"\n", pos + 5)])
        at = data.rfind(b"\nid: ", 0, end)
        last = int(data[at + 5 : data.find(b"\n", at + 5)])
        count = data.count(b"\nid: ", 0, end)
        if last > feed.parsed_up_to or count != last - first + 1:
            seqs = self._scan(data, pos, end)
        else:
            seqs = None
        if seqs is None:  # consecutive sequences: one receipt
            self._check(first)
            self.last_seq = last
            self.firsts.append(first)
            self.lasts.append(last)
            self.times.append(now)
        else:
            for seq in seqs:
                self._check(seq)
                self.last_seq = seq
                self.firsts.append(seq)
                self.lasts.append(seq)
                self.times.append(now)
        feed.frames += count
        feed.chunks += 1
        feed.event_bytes += end
        if b"too far behind" in data:
            self._dropped()

    def _check(self, seq: int) -> None:
        last = self.last_seq
        if last and seq != last + 1:
            if seq <= last:
                self.feed.duplicates += 1
            else:
                self.feed.gaps += seq - last - 1

    def _scan(self, data: bytes, pos: int, end: int) -> list[int] | None:
        """Parse the events this process has not seen yet; the read's sequences when they are not
        consecutive (None when they are)."""
        feed = self.feed
        seqs = []
        while pos >= 0:
            newline = data.find(b"\n", pos + 5)
            seq = int(data[pos + 5 : newline])
            if seq > feed.parsed_up_to or seq not in feed.recorded:
                feed.recorded[seq] = recorded_epoch(data, newline)
                feed.positions[seq] = position_of(data, newline)
                feed.parsed_up_to = max(feed.parsed_up_to, seq)
            seqs.append(seq)
            pos = data.find(b"\nid: ", newline, end)
        consecutive = all(b == a + 1 for a, b in zip(seqs, seqs[1:]))
        return None if consecutive else seqs

    def window_latencies(
        self, low: float, high: float, hist: list[int], spans: dict[int, list[float]], acked: dict[int, float], ack_hist: list[int],
    ) -> tuple[int, float, int, float]:
        """After the run: add this connection's deliveries of window events to `hist` and `spans` (first
        and last receive time per sequence), and to `ack_hist` timed from `acked` (sequence -> when the
        writer had the command's result); returns (deliveries, max latency, negative latencies, max
        latency from the acknowledgement)."""
        recorded = self.feed.recorded
        count, worst, negative, worst_ack = 0, 0.0, 0, 0.0
        for first, last, now in zip(self.firsts, self.lasts, self.times):
            for seq in range(first, last + 1):
                at = recorded.get(seq)
                if at is None or not low <= at < high:
                    continue
                ack = acked.get(seq)
                if ack is not None:
                    since_ack = now - ack
                    ack_hist[min(max(int(since_ack * HIST_RESOLUTION), 0), HIST_BUCKETS - 1)] += 1
                    if since_ack > worst_ack:
                        worst_ack = since_ack
                latency = now - at
                bucket = int(latency * HIST_RESOLUTION)
                if bucket < 0:
                    negative += 1
                    bucket = 0
                elif bucket >= HIST_BUCKETS:
                    bucket = HIST_BUCKETS - 1
                hist[bucket] += 1
                if latency > worst:
                    worst = latency
                span = spans.get(seq)
                if span is None:
                    spans[seq] = [now, now]
                elif now < span[0]:
                    span[0] = now
                elif now > span[1]:
                    span[1] = now
                count += 1
        return count, worst, negative, worst_ack

    def _dropped(self) -> None:
        if not self.dropped:
            self.dropped = True
            self.feed.drops += 1
        self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed and not self.dropped and not self.feed.stopping and self.streaming:
            self.feed.disconnects += 1
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"connection closed before the stream started: {exc!r}"))

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


@dataclass(frozen=True)
class Auth:
    """How the bench signs access tokens the server accepts: its JWT secret, issuer and audience."""

    secret: str
    issuer: str
    audience: str
    role: str = "auditor"  # holds events:read everywhere: every event reaches every client

    def token(self) -> str:
        """A token of a client of its own (a new subject each time), valid for the whole run."""
        from infrastructure.identity.tokens import TokenService

        service = _token_services.get(self)
        if service is None:
            service = _token_services[self] = TokenService(self.secret, self.issuer, self.audience, access_ttl=6 * 3600)
        token, _ = service.issue(str(uuid.uuid4()), [(self.role, None)], "bench SSE client")
        return token


_token_services: dict[Auth, Any] = {}


def sse_request(host: str, port: int, token: str | None) -> bytes:
    authorization = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"GET {SSE_PATH} HTTP/1.1\r\nHost: {host}:{port}\r\nAccept: text/event-stream\r\n"
        f"Cache-Control: no-cache\r\nUser-Agent: charter-bench-fanout\r\n{authorization}\r\n"
    ).encode()


async def open_sse(host: str, port: int, feed: Feed, auth: Auth | None, timeout: float = 30.0) -> SseConnection:
    loop = asyncio.get_running_loop()
    conn = SseConnection(feed, sse_request(host, port, auth.token() if auth else None), loop)
    try:
        await asyncio.wait_for(loop.create_connection(lambda: conn, host, port), timeout)
        await asyncio.wait_for(asyncio.shield(conn.ready), timeout)
    except BaseException:
        conn.close()
        raise
    return conn


def client_entry(
    host: str, port: int, auth: Auth, count: int, index: Any, window: Any, connected: Any, failed: Any, frames: Any,
    stop: Any, out: Any, allowed: Any = None, nats_url: str | None = None, subject: str | None = None, acks: Acks | None = None,
) -> None:
    """A client process: `count` SSE connections (and, for the probe, a core-NATS subscription); only the
    fraction `allowed.value` of them is opened until the parent raises it (memory is read in steps)."""
    _raise_nofile()
    try:
        _run_loop(
            _clients(host, port, auth, count, index, window, connected, failed, frames, stop, out, allowed, nats_url, subject, acks)
        )
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        out.put(("error", index, repr(exc)))


async def _clients(
    host: str, port: int, auth: Auth, count: int, index: Any, window: Any, connected: Any, failed: Any, frames: Any,
    stop: Any, out: Any, allowed: Any, nats_url: str | None, subject: str | None, acks: Acks | None = None,
) -> None:
    feed = Feed()
    conns: list[SseConnection] = []
    errors: list[str] = []
    gate = asyncio.Semaphore(64)

    async def open_one() -> None:
        async with gate:
            for attempt in range(5):
                try:
                    conns.append(await open_sse(host, port, feed, auth))
                except Exception as exc:  # noqa: BLE001 - retried, then counted
                    errors.append(repr(exc))
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                connected.value += 1
                return
            failed.value += 1

    nats_hist = new_histogram()
    nats_state = {"max": 0.0, "count": 0}
    nc = None
    if nats_url and subject:
        import nats

        def on_message(msg: Any) -> None:
            now = time.time()
            at = recorded_epoch(msg.data, 0)
            low, high = feed.window
            if low <= at < high:
                latency = now - at
                nats_hist[min(max(int(latency * HIST_RESOLUTION), 0), HIST_BUCKETS - 1)] += 1
                nats_state["max"] = max(nats_state["max"], latency)
                nats_state["count"] += 1

        async def callback(msg: Any) -> None:
            on_message(msg)

        nc = await nats.connect(nats_url, connect_timeout=5)
        await nc.subscribe(subject, cb=callback, pending_msgs_limit=1_000_000)

    opening: list[asyncio.Task[None]] = []
    try:
        while not stop.is_set():
            wanted = count if allowed is None else min(count, math.ceil(count * allowed.value - 1e-9))
            while len(opening) < wanted:
                opening.append(asyncio.create_task(open_one()))
            frames.value = feed.frames
            feed.window = (window[0], window[1])
            await asyncio.sleep(0.05)
    finally:
        feed.stopping = True
        for task in opening:
            task.cancel()
        await asyncio.gather(*opening, return_exceptions=True)
    frames.value = feed.frames
    feed.window = (window[0], window[1])
    low, high = feed.window
    hist, ack_hist = new_histogram(), new_histogram()
    spans: dict[int, list[float]] = {}
    acked: dict[int, float] = {}
    if acks is not None:
        for seq, position in feed.positions.items():
            at = acks.time_of(position)
            if at is not None:
                acked[seq] = at
    per_client, max_latency, negative, max_ack = [], 0.0, 0, 0.0
    for conn in conns:
        count, worst, below, worst_ack = conn.window_latencies(low, high, hist, spans, acked, ack_hist)
        per_client.append(count)
        max_latency, negative, max_ack = max(max_latency, worst), negative + below, max(max_ack, worst_ack)
    window_seqs = [seq for seq, at in feed.recorded.items() if low <= at < high]
    result = {
        "connections": len(conns),
        "connect_errors": errors[:5],
        "per_client_window": per_client,
        "hist": sparse(hist),
        "max_latency": max_latency,
        "ack_hist": sparse(ack_hist),
        "max_ack_latency": max_ack,
        "negative": negative,
        "frames": feed.frames,
        "drops": feed.drops,
        "disconnects": feed.disconnects,
        "gaps": feed.gaps,
        "duplicates": feed.duplicates,
        "heartbeats": feed.heartbeats,
        "chunks": feed.chunks,
        "event_bytes": feed.event_bytes,
        "window_seqs": window_seqs,
        "spread": {seq: (first, last) for seq, (first, last) in spans.items()},
        "nats_hist": sparse(nats_hist) if nc is not None else None,
        "nats_max": nats_state["max"],
    }
    for conn in conns:
        conn.close()
    if nc is not None:
        with contextlib.suppress(Exception):
            await nc.close()
    out.put(("done", index, result))


# -- the command writer (its own process) -------------------------------------------------------------


def writer_entry(settings: Any, plugins: int, rate: float, counter: Any, control: Any, out: Any, acks: Acks | None = None) -> None:
    try:
        _run_loop(_writer(settings, plugins, rate, counter, control, out, acks))
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


# -- the server process -------------------------------------------------------------------------------


def serve() -> None:
    """`python -m ops.bench.fanout serve`: uvicorn on create_app(Settings.from_env()).

    With CHARTER_BENCH_PROFILE_SERVER=<file> it profiles the event loop thread with cProfile between
    SIGUSR1 and SIGUSR2 (the bench sends them around the measured window) and writes the stats there.
    """
    _raise_nofile()
    import uvicorn

    from infrastructure.settings import Settings
    from interfaces.app import create_app
    from interfaces.serving import server_config

    settings = Settings.from_env()
    app = create_app(settings)
    config = server_config(app, settings.host, settings.port)
    profile_path = os.environ.get(PROFILE_ENV)
    if profile_path:
        import cProfile

        profiler = cProfile.Profile()

        def begin(*_: Any) -> None:
            profiler.enable()

        def end(*_: Any) -> None:
            profiler.disable()
            profiler.dump_stats(profile_path)

        signal.signal(signal.SIGUSR1, begin)
        signal.signal(signal.SIGUSR2, end)
    signal.signal(signal.SIGQUIT, _dump_stacks)
    config.load()
    print(f"http={config.http_protocol_class.__name__} loop={config.loop}", file=sys.stderr, flush=True)
    uvicorn.Server(config).run()


def _dump_stacks(_signum: int, frame: Any) -> None:
    """SIGQUIT: the main thread's stack and every asyncio task's, to stderr (the bench sends it when the
    server does not stop)."""
    import traceback

    print("--- SIGQUIT: main thread", file=sys.stderr)
    traceback.print_stack(frame, file=sys.stderr)
    with contextlib.suppress(RuntimeError):
        tasks = asyncio.all_tasks(asyncio.get_running_loop())
        print(f"--- {len(tasks)} asyncio tasks", file=sys.stderr)
        seen: dict[str, int] = {}
        for task in tasks:
            chain, awaited = [], task.get_coro()
            while awaited is not None and len(chain) < 12:  # outermost -> innermost awaited coroutine
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
                if frame is None:
                    chain.append(type(awaited).__name__)
                    break
                chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
                awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
            where = " > ".join(chain) or repr(task)
            if task.cancelling():
                where += f"  [cancel requested {task.cancelling()}x]"
            seen[f"{task.get_name().rstrip('0123456789')}: {where}"] = seen.get(f"{task.get_name().rstrip('0123456789')}: {where}", 0) + 1
        for where, n in sorted(seen.items(), key=lambda kv: -kv[1]):
            print(f"{n:6d} x {where}", file=sys.stderr)
    import gc
    import types

    suspended: dict[str, int] = {}
    for obj in gc.get_objects():  # async generators (lifespans, SSE streams) a task dump cannot see into
        if isinstance(obj, types.AsyncGeneratorType) and obj.ag_frame is not None and obj.ag_await is not None:
            chain, awaited = [f"{obj.ag_code.co_name}:{obj.ag_frame.f_lineno}"], obj.ag_await
            while awaited is not None and len(chain) < 12:
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
                if frame is None:
                    chain.append(type(awaited).__name__)
                    break
                chain.append(f"{frame.f_code.co_name}:{frame.f_lineno}")
                awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
            suspended[" > ".join(chain)] = suspended.get(" > ".join(chain), 0) + 1
    print(f"--- {sum(suspended.values())} suspended async generators", file=sys.stderr)
    for where, n in sorted(suspended.items(), key=lambda kv: -kv[1]):
        print(f"{n:6d} x {where}", file=sys.stderr)
    sys.stderr.flush()


@dataclass
class FanoutServer(ServerProcess):
    host: str = "127.0.0.1"

    def warnings(self, keep: int = 8) -> dict[str, Any]:
        """The server's log lines at warning level or above, counted by message (first few kept)."""
        counts: dict[str, int] = {}
        with contextlib.suppress(OSError):
            for line in self.log.read_text(errors="replace").splitlines():
                if not line.startswith("{"):
                    continue
                with contextlib.suppress(ValueError):
                    entry = json.loads(line)
                    if entry.get("level") in ("warning", "error", "critical"):
                        key = f"{entry.get('level')}: {entry.get('event')} {entry.get('error', '')}".strip()
                        counts[key] = counts.get(key, 0) + 1
        return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:keep])



def start_server(env: dict[str, str], host: str, port: int, log: Path, cwd: Path) -> FanoutServer:
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "ops.bench.fanout", "serve"],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return FanoutServer(process=process, port=port, log=log, host=host)


async def wait_for_stream(server: FanoutServer, auth: Auth, timeout: float = 120.0) -> None:
    """Until the SSE endpoint answers 200: the hub is subscribed to JetStream and the guard knows the
    bench's role (the access read model, built by the projectors in the writer process, is loaded)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"the Charter server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            conn = await open_sse(server.host, server.port, Feed(), auth, timeout=5)
            conn.close()
            return
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the Charter server did not stream events within {timeout}s ({last!r}):\n{server.log_tail()}")


async def warm_connections(server: FanoutServer, auth: Auth, count: int) -> None:
    """Open and close a few SSE connections, so first-request costs do not count as per-client memory."""
    conns = await asyncio.gather(*(open_sse(server.host, server.port, Feed(), auth) for _ in range(count)))
    await asyncio.sleep(0.2)
    for conn in conns:
        conn.close()
    await asyncio.sleep(0.5)


async def http_get(host: str, port: int, path: str, timeout: float = 10.0) -> bytes:
    """The body of GET `path`, over HTTP/1.0 (no chunking, the server closes)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: {host}:{port}\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
    return raw.split(b"\r\n\r\n", 1)[1]


async def http_get_json(host: str, port: int, path: str, timeout: float = 10.0) -> Any:
    """GET `path` and decode the JSON body (an error entry on failure)."""
    try:
        return json.loads(await http_get(host, port, path, timeout))
    except Exception as exc:  # noqa: BLE001 - diagnostics only
        return {"error": repr(exc)}


async def hub_flushes(host: str, port: int, timeout: float = 10.0) -> dict[str, float]:
    """The server's SSE hub counters from /metrics: flushes, their event-loop seconds and events."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        text = (await http_get(host, port, "/metrics", timeout)).decode(errors="replace")
    except Exception:  # noqa: BLE001 - diagnostics only
        return {}
    wanted = {
        "charter_sse_flush_seconds_count": "flushes",
        "charter_sse_flush_seconds_sum": "seconds",
        "charter_sse_flush_events_sum": "events",
    }
    return {
        wanted[sample.name]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name in wanted
    }


def hub_window(before: dict[str, float], after: dict[str, float], subscribers: int) -> dict[str, Any] | None:
    """What the hub's flushes cost in the measured window (subscribers: the clients and the probe)."""
    if not before or not after:
        return None
    flushes = after.get("flushes", 0) - before.get("flushes", 0)
    seconds = after.get("seconds", 0) - before.get("seconds", 0)
    events = after.get("events", 0) - before.get("events", 0)
    if flushes <= 0:
        return None
    return {
        "flushes": int(flushes),
        "events_per_flush": round(events / flushes, 2),
        "flush_ms_avg": round(seconds / flushes * 1000, 2),
        "us_per_write": round(seconds / (flushes * subscribers) * 1e6, 2),
    }


async def relay_behind(dsn: str) -> int:
    """Events committed that the relay has not published yet."""
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM events e WHERE (e.transaction_id, e.position) >"
            " coalesce((SELECT (c.transaction_id, c.position) FROM checkpoints c WHERE c.name = 'relay'),"
            " ('0'::xid8, 0::bigint))"
        )
    finally:
        await conn.close()


# -- (1)-(3): server, idle clients, load ----------------------------------------------------------------


@dataclass
class FanoutConfig:
    clients: int
    rate: float
    seconds: float
    warmup: float
    idle_seconds: float
    client_processes: int
    plugins: int
    server_projectors: bool
    relay_in: str  # "server" (as `charter serve` runs it) or "writer" (a worker process beside the API)
    profile: Path | None


@dataclass
class FanoutResult:
    memory: dict[str, Any] = field(default_factory=dict)
    load: dict[str, Any] = field(default_factory=dict)
    server: dict[str, Any] = field(default_factory=dict)
    profile_top: str | None = None


def _server_env(dsn: str, nats_url: str, stream: Any, port: int, cfg: FanoutConfig, secret: str, jwt_secret: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "CHARTER_DATABASE_URL": dsn,
            "CHARTER_NATS_URL": nats_url,
            "CHARTER_NATS_STREAM": stream.name,
            "CHARTER_NATS_SUBJECT_PREFIX": stream.prefix,
            "CHARTER_NATS_MAX_AGE_DAYS": "1",
            "CHARTER_HOST": "127.0.0.1",
            "CHARTER_PORT": str(port),
            "CHARTER_SECRET_KEY": secret,
            "CHARTER_JWT_SECRET": jwt_secret,
            # 1,000 clients connecting from one address must not be rate limited (the limiter still runs).
            "CHARTER_RATE_LIMIT_ANONYMOUS": "1000000000",
            "CHARTER_RATE_LIMIT_USER": "1000000000",
            "CHARTER_RATE_LIMIT_ADMIN": "1000000000",
            "CHARTER_RUN_PROJECTORS": "true" if cfg.server_projectors else "false",
            "CHARTER_RUN_RELAY": "true" if cfg.relay_in == "server" else "false",
            "CHARTER_MIGRATE_ON_START": "false",
            "PYTHONPATH": os.pathsep.join(p for p in (str(_ROOT), env.get("PYTHONPATH", "")) if p),
        }
    )
    env.setdefault("CHARTER_LOG_LEVEL", "warning")
    # Settings.from_env cannot parse CHARTER_DATA_DIR (str -> Path); with a secret key the server needs no
    # data dir, and it runs in a directory of its own (the default `.charter` lands there).
    env.pop("CHARTER_DATA_DIR", None)
    env.pop(PROFILE_ENV, None)
    if cfg.profile is not None:
        env[PROFILE_ENV] = str(cfg.profile)
    return env


def _wait_messages(out: Any, kind: str, expected: int, timeout: float, alive: Any) -> dict[Any, Any]:
    """Collect `expected` ("kind", key, body) messages; raise on an ("error", ...) or a dead child."""
    import queue as queues

    found: dict[Any, Any] = {}
    deadline = time.monotonic() + timeout
    while len(found) < expected:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"waited {timeout:g}s for {expected - len(found)} '{kind}' messages")
        try:
            message = out.get(timeout=min(0.5, left))
        except queues.Empty:
            alive()
            continue
        if message[0] == "error":
            raise RuntimeError(f"bench process {message[1]} failed: {message[2]}")
        if message[0] == kind:
            found[message[1]] = message[2]
    return found


def run_fanout_phases(
    dsn: str, nats_url: str, stream: Any, cfg: FanoutConfig, workdir: Path, progress: Progress, nats_pid: int | None
) -> FanoutResult:
    import multiprocessing

    from cryptography.fernet import Fernet

    from infrastructure.embedded.servers import find_free_port
    from infrastructure.settings import Settings

    result = FanoutResult()
    mp = multiprocessing.get_context("spawn")
    secret = Fernet.generate_key().decode()
    jwt_secret = uuid.uuid4().hex + uuid.uuid4().hex
    out = mp.Queue()
    stop = mp.Event()
    window = mp.Array("d", [math.inf, math.inf], lock=False)
    children: list[Any] = []
    server: FanoutServer | None = None

    def alive() -> None:
        for child in children:
            if child.exitcode not in (None, 0):
                raise RuntimeError(f"bench process {child.name} exited with {child.exitcode}")
        if server is not None and server.process.poll() is not None:
            raise RuntimeError(f"the Charter server exited with {server.process.returncode}:\n{server.log_tail()}")

    setup = progress.add_task("(1) setup", total=4, status="writer process: installing plugins")
    try:
        # The writer: its own runtime - the application write path. It is also the projector worker (as
        # production runs them beside the API replicas): the server's guard needs the access read model,
        # and the server itself stays an API replica without projectors. With --relay-in writer it runs
        # the relay too (and then, as every runtime with NATS does, an event hub nobody subscribes to).
        writer_settings = Settings.from_env(
            database_url=dsn,
            data_dir=workdir / "writer",
            secret_key=secret,
            log_level="warning",
            run_projectors=True,
            migrate_on_start=False,
        )
        writer_settings.run_relay = cfg.relay_in == "writer"
        writer_settings.nats_url = nats_url if cfg.relay_in == "writer" else None
        writer_settings.nats_stream = stream.name
        writer_settings.nats_subject_prefix = stream.prefix
        writer_settings.nats_max_age_days = 1.0
        committed = mp.Value("q", 0, lock=False)
        acks = Acks(mp)
        control = mp.Queue()
        writer = mp.Process(
            target=writer_entry, args=(writer_settings, cfg.plugins, cfg.rate, committed, control, out, acks), name="writer", daemon=True
        )
        writer.start()
        children.append(writer)
        _wait_messages(out, "ready", 1, 300, alive)
        progress.update(setup, advance=1, status=f"{cfg.plugins} plugins installed; starting the Charter server")

        port = find_free_port()
        env = _server_env(dsn, nats_url, stream, port, cfg, secret, jwt_secret)
        server_settings = Settings.from_env(env)
        auth = Auth(jwt_secret, server_settings.jwt_issuer, server_settings.jwt_audience)
        result.server["settings"] = {
            k: v for k, v in msgspec_to_dict(server_settings).items()
            if k.startswith(("sse_", "pool_", "writers", "max_batch", "poll_", "run_", "nats_stream", "rate_limit"))
        }
        server = start_server(env, "127.0.0.1", port, workdir / "server.log", workdir / "server")
        asyncio.run(wait_for_stream(server, auth))
        deadline = time.monotonic() + 120
        while (behind := asyncio.run(relay_behind(dsn))) > 0:
            progress.update(setup, status=f"relay publishing the installs: {behind} to go")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server's relay is still {behind} events behind")
            alive()
            time.sleep(0.2)
        result.server["pid"] = server.pid
        with contextlib.suppress(Exception):
            result.server["http_impl"] = next(
                line.strip() for line in server.log.read_text().splitlines() if line.startswith("http=")
            )
        progress.update(setup, advance=1, status="server up, relay caught up; warming up the SSE route")
        asyncio.run(warm_connections(server, auth, 10))

        # The probe: one more SSE client and a core-NATS subscription, in a quiet process of its own.
        probe_connected, probe_failed, probe_frames = (mp.Value("i", 0, lock=False), mp.Value("i", 0, lock=False), mp.Value("q", 0, lock=False))
        probe = mp.Process(
            target=client_entry,
            args=("127.0.0.1", port, auth, 1, "probe", window, probe_connected, probe_failed, probe_frames, stop, out, None, nats_url, f"{stream.prefix}.>", acks),
            name="probe",
            daemon=True,
        )
        probe.start()
        children.append(probe)
        deadline = time.monotonic() + 60
        while probe_connected.value + probe_failed.value < 1:
            if time.monotonic() > deadline:
                raise TimeoutError("the probe client did not connect")
            alive()
            time.sleep(0.05)
        if probe_failed.value:
            raise RuntimeError("the probe client could not connect")
        progress.update(setup, advance=1, status="idle before clients connect")
        time.sleep(2.0)
        before = rss_kib(server.pid)
        progress.update(setup, advance=1, status=f"server RSS before clients: {before.get('rss', 0) / 1024:,.1f} MiB")

        # (2) idle clients, connected in two steps (half, then all): RSS is read after each, as the
        # median of several samples, so the per-client figure does not hinge on one reading.
        shares = [cfg.clients // cfg.client_processes + (1 if i < cfg.clients % cfg.client_processes else 0) for i in range(cfg.client_processes)]
        connected = [mp.Value("i", 0, lock=False) for _ in shares]
        failed = [mp.Value("i", 0, lock=False) for _ in shares]
        frames = [mp.Value("q", 0, lock=False) for _ in shares]
        allowed = mp.Value("d", 0.5, lock=False)
        clients = []
        for i, share in enumerate(shares):
            proc = mp.Process(
                target=client_entry,
                args=("127.0.0.1", port, auth, share, i, window, connected[i], failed[i], frames[i], stop, out, allowed, None, None, acks),
                name=f"clients-{i}",
                daemon=True,
            )
            proc.start()
            clients.append(proc)
            children.append(proc)
        connecting = progress.add_task("(2) connect SSE clients", total=cfg.clients, status="")
        postgres_pid = asyncio.run(postmaster_pid(dsn))
        started = time.monotonic()
        steps: list[dict[str, Any]] = []
        idle_cpu = CpuWindow({"server": server.pid, "writer": writer.pid}, {"postgres": postgres_pid})
        for fraction in (0.5, 1.0):
            allowed.value = fraction
            goal = sum(min(share, math.ceil(share * fraction - 1e-9)) for share in shares)
            while (done := sum(c.value for c in connected)) + sum(f.value for f in failed) < goal:
                progress.update(connecting, completed=done, status=f"{done:,}/{cfg.clients:,} connected")
                if time.monotonic() - started > 300:
                    raise TimeoutError(f"only {done} of {cfg.clients} SSE clients connected in 300 s")
                alive()
                time.sleep(0.1)
            progress.update(connecting, completed=done, status=f"{done:,} connected; idle {cfg.idle_seconds:g}s")
            if fraction == 1.0:
                connect_seconds = time.monotonic() - started
                idle_cpu.start()
            time.sleep(cfg.idle_seconds)
            samples = []
            for _ in range(5):
                samples.append(rss_kib(server.pid).get("rss", 0))
                time.sleep(0.2)
            steps.append({"clients": sum(c.value for c in connected), "rss_kib": sorted(samples)[len(samples) // 2], "samples": samples})
        n_connected = steps[-1]["clients"]
        rss_before = before.get("rss", 0)
        delta = steps[-1]["rss_kib"] - rss_before
        per_client = delta / n_connected if n_connected else None
        marginal_clients = steps[-1]["clients"] - steps[0]["clients"]
        marginal = (steps[-1]["rss_kib"] - steps[0]["rss_kib"]) / marginal_clients if marginal_clients > 0 else None
        result.memory = {
            "server_rss_before_kib": rss_before,
            "server_rss_idle_clients_kib": steps[-1]["rss_kib"],
            "idle_clients": n_connected,
            "failed_clients": sum(f.value for f in failed),
            "connect_seconds": round(connect_seconds, 2),
            "idle_seconds": cfg.idle_seconds,
            "delta_kib": delta,
            "kib_per_idle_client": round(per_client, 2) if per_client is not None else None,
            "kib_per_idle_client_marginal": round(marginal, 2) if marginal is not None else None,
            "steps": steps,
            "cpu_cores_while_idle": idle_cpu.stop(),
        }
        progress.update(
            connecting,
            completed=cfg.clients,
            status=f"{n_connected:,} idle clients: server RSS {rss_before / 1024:,.1f} -> {steps[-1]['rss_kib'] / 1024:,.1f} MiB"
            + (f" = {per_client:,.1f} KiB/client" if per_client is not None else "")
            + (f" (half -> all: {marginal:,.1f})" if marginal is not None else ""),
        )

        # (3) load: steady commands, deliveries timed at the clients.
        go_at = time.time() + 0.6
        window[0], window[1] = go_at + cfg.warmup, go_at + cfg.warmup + cfg.seconds
        time.sleep(0.3)  # the client processes pick the window up every 0.1 s
        pids = {"server": server.pid, "writer": writer.pid, "probe": probe.pid, "nats_server": nats_pid}
        pids.update({f"clients_{i}": c.pid for i, c in enumerate(clients)})
        cpu = CpuWindow(pids, {"postgres": postgres_pid})
        control.put(("go", go_at, window[1]))
        writes = Meter(progress, "(3) commands -> log", "events", cfg.warmup, cfg.seconds)
        deliveries = Meter(progress, "(3) SSE deliveries", "deliveries", cfg.warmup, cfg.seconds)

        def delivered() -> int:
            return sum(f.value for f in frames)

        time.sleep(max(0.0, go_at - time.time()))
        writes.restart_clock()
        deliveries.restart_clock()
        profiling = cfg.profile is not None
        lag_samples: list[int] = []
        next_lag = 0.0
        while time.time() < window[1]:
            if time.monotonic() >= next_lag:
                next_lag = time.monotonic() + 1.0
                with contextlib.suppress(Exception):
                    lag_samples.append(asyncio.run(relay_behind(dsn)))
            now = time.time()
            if not writes.measuring and writes.window is None and now >= window[0]:
                writes.begin(committed.value)
                deliveries.begin(delivered())
                cpu.start()
                hub_before = asyncio.run(hub_flushes(server.host, server.port))
                if profiling:
                    server.process.send_signal(signal.SIGUSR1)
            writes.tick(committed.value)
            deliveries.tick(delivered())
            alive()
            time.sleep(min(0.2, max(0.01, window[1] - time.time())))
        if writes.window is None:  # a window shorter than one tick
            writes.begin(committed.value)
            deliveries.begin(delivered())
            cpu.start()
            hub_before = asyncio.run(hub_flushes(server.host, server.port))
        cores = cpu.stop()
        hub_after = asyncio.run(hub_flushes(server.host, server.port))
        if profiling:
            server.process.send_signal(signal.SIGUSR2)
        written, write_seconds = writes.end(committed.value)
        deliveries.end(delivered())
        progress.update(writes.task, completed=cfg.warmup + cfg.seconds, status=f"[bold]{written / write_seconds:,.0f} events/s[/bold] committed in the window")

        # Drain: wait until the clients stop receiving (or a deadline).
        draining = progress.add_task("(3) drain", total=None, status="")
        writer_done = _wait_messages(out, "done", 1, 60, alive)["writer"]
        last, quiet_since, drain_start = -1, time.monotonic(), time.monotonic()
        while time.monotonic() - quiet_since < 1.0 and time.monotonic() - drain_start < 30:
            total = delivered()
            if total != last:
                last, quiet_since = total, time.monotonic()
            progress.update(draining, status=f"{total:,} deliveries so far")
            time.sleep(0.1)
        after_load = rss_kib(server.pid)
        result.server["ready_after_load"] = asyncio.run(http_get_json(server.host, server.port, "/ready"))
        result.server["relay_lag_in_window"] = {
            "samples": len(lag_samples), "max": max(lag_samples, default=None), "last": lag_samples[-1] if lag_samples else None,
        }
        stop.set()
        reports = _wait_messages(out, "done", len(clients) + 1, 60, alive)
        progress.update(draining, total=1, completed=1, status=f"done after {time.monotonic() - drain_start:.1f}s")

        committed_in_window = asyncio.run(events_recorded_between(dsn, window[0], window[1]))
        result.load = summarize_load(cfg, reports, writer_done, cores, window[0], window[1], committed_in_window)
        result.load["hub"] = hub_window(hub_before, hub_after, result.load["clients"] + 1)
        result.memory["server_rss_after_load_kib"] = after_load.get("rss")
        result.memory["server_rss_peak_kib"] = after_load.get("hwm")
        progress.update(
            deliveries.task,
            completed=cfg.warmup + cfg.seconds,
            status=f"[bold]{result.load['deliveries_per_s']:,.0f} deliveries/s[/bold], p99 "
            f"{(result.load['latency_ms'] or {}).get('p99', float('nan')):,.1f} ms",
        )
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            control.put(("stop", 0, 0))
        if server is not None:
            stopping = time.monotonic()
            result.server["exit_code"] = server.stop()
            result.server["shutdown_seconds"] = round(time.monotonic() - stopping, 2)
            result.server["log_tail"] = server.log_tail(40)
            result.server["warnings"] = server.warnings()
        for child in children:
            child.join(timeout=20)
            if child.is_alive():
                child.terminate()
                child.join(timeout=5)
    if cfg.profile is not None and cfg.profile.exists():
        result.profile_top = profile_text(cfg.profile)
    return result


def msgspec_to_dict(settings: Any) -> dict[str, Any]:
    import msgspec

    return {k: (str(v) if isinstance(v, Path) else v) for k, v in msgspec.structs.asdict(settings).items()}


def profile_text(path: Path, top: int = 30) -> str:
    import pstats

    buffer = io.StringIO()
    stats = pstats.Stats(str(path), stream=buffer)
    stats.sort_stats("tottime").print_stats(top)
    buffer.write("\n")
    stats.sort_stats("cumulative").print_stats(top)
    return buffer.getvalue()


async def events_recorded_between(dsn: str, low: float, high: float) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(
            "SELECT count(*) FROM events WHERE recorded_at >= to_timestamp($1) AND recorded_at < to_timestamp($2)", low, high
        )
    finally:
        await conn.close()


def summarize_load(
    cfg: FanoutConfig, reports: dict[Any, Any], writer: dict[str, Any], cores: dict[str, float], low: float, high: float,
    committed: int,
) -> dict[str, Any]:
    probe = reports.pop("probe")
    buckets: dict[int, int] = {}
    ack_buckets: dict[int, int] = {}
    max_ack = 0.0
    per_client: list[int] = []
    window_seqs: set[int] = set(probe["window_seqs"])
    totals = {
        "drops": 0, "disconnects": 0, "gaps": 0, "duplicates": 0, "negative": 0, "connections": 0, "chunks": 0, "frames": 0,
        "event_bytes": 0,
    }
    max_latency = 0.0
    for report in reports.values():
        for bucket, n in report["hist"].items():
            buckets[bucket] = buckets.get(bucket, 0) + n
        for bucket, n in report["ack_hist"].items():
            ack_buckets[bucket] = ack_buckets.get(bucket, 0) + n
        max_ack = max(max_ack, report["max_ack_latency"])
        per_client.extend(report["per_client_window"])
        window_seqs.update(report["window_seqs"])
        max_latency = max(max_latency, report["max_latency"])
        for key in totals:
            totals[key] += report[key]
    spans: dict[int, list[float]] = {}
    for report in reports.values():
        for seq, (first, last) in report["spread"].items():
            span = spans.setdefault(int(seq), [first, last])
            span[0], span[1] = min(span[0], first), max(span[1], last)
    spread = sorted(last - first for first, last in spans.values())

    def spread_at(q: float) -> float:
        return round(spread[min(len(spread) - 1, int(q * len(spread)))] * 1000, 2)

    seconds = high - low
    events = len(window_seqs)
    delivered = sum(per_client)
    expected = max(events, committed) * totals["connections"]
    # CPU per delivery: cores over the window / all frames received per second (warm-up and drain frames
    # included in neither, so this is approximate).
    frames_per_s = delivered / seconds if seconds > 0 else 0.0
    chunks_per_s = frames_per_s * totals["chunks"] / totals["frames"] if totals["frames"] else 0.0
    ordered = sorted(per_client)

    client_cores = {k: v for k, v in cores.items() if k.startswith("clients_")}

    def rate(n: float) -> float:
        return round(n / seconds, 2) if seconds > 0 else 0.0

    return {
        "window_seconds": round(seconds, 3),
        "commands": {
            "rate_requested": cfg.rate,
            "issued": writer["issued"],
            "completed": writer["completed"],
            "errors": writer["errors"],
            "first_error": writer["first_error"],
            "busy_skips": writer["busy_skips"],
            "max_in_flight": writer["max_in_flight"],
            "rate_achieved": round(writer["completed"] / writer["seconds"], 1) if writer["seconds"] else 0.0,
            "latency_ms": latency_summary(writer["latencies"]),
        },
        "events_in_window": events,
        "events_committed_in_window": committed,
        "events_never_delivered": max(0, committed - events),
        "events_per_s": rate(committed),
        "clients": totals["connections"],
        "deliveries": delivered,
        "expected_deliveries": expected,
        "missing_deliveries": expected - delivered,
        "deliveries_per_s": rate(delivered),
        "per_client_events_per_s": {
            "mean": rate(delivered / len(per_client)) if per_client else 0.0,
            "min": rate(ordered[0]) if ordered else 0.0,
            "p50": rate(ordered[len(ordered) // 2]) if ordered else 0.0,
            "max": rate(ordered[-1]) if ordered else 0.0,
        },
        "drops": totals["drops"],
        "disconnects": totals["disconnects"],
        "gaps": totals["gaps"],
        "duplicates": totals["duplicates"],
        "negative_latencies": totals["negative"],
        "latency_ms": hist_summary(buckets, max_latency),
        # The same deliveries timed from when the writer had the command's result (after its commit):
        # recorded_at is taken before the group commit, so the truth lies between the two.
        "latency_from_ack_ms": hist_summary(ack_buckets, max_ack),
        # One event, first client to last client: how long a flush to every client takes (the p99 floor).
        "fanout_spread_ms": {"p50": spread_at(0.5), "p99": spread_at(0.99), "max": round(spread[-1] * 1000, 2)} if spread else None,
        "probe": {k: probe[k] for k in ("frames", "drops", "disconnects", "gaps", "duplicates", "chunks")},
        "stages_ms": {
            "command_execute": latency_summary(writer["latencies"]),
            "recorded_to_jetstream": hist_summary(probe["nats_hist"] or {}, probe["nats_max"]),
            "recorded_to_probe_sse": hist_summary(probe["hist"], probe["max_latency"]),
        },
        "cpu_cores": cores,
        "events_per_chunk": round(totals["frames"] / totals["chunks"], 2) if totals["chunks"] else None,
        "bytes_per_chunk": round(totals["event_bytes"] / totals["chunks"]) if totals["chunks"] else None,
        "server_us_per_delivery": round(cores.get("server", 0.0) / frames_per_s * 1e6, 2) if frames_per_s else None,
        "server_us_per_chunk": round(cores.get("server", 0.0) / chunks_per_s * 1e6, 2) if chunks_per_s else None,
        "clients_us_per_chunk": round(sum(client_cores.values()) / chunks_per_s * 1e6, 2) if chunks_per_s else None,
        "clients_us_per_delivery": round(sum(client_cores.values()) / frames_per_s * 1e6, 2) if frames_per_s else None,
        "client_processes": len(reports),
        "client_side_saturated": any(v >= 0.9 for v in client_cores.values()),
        "server_saturated": cores.get("server", 0.0) >= 0.9,
    }


# -- (5) the machine's floor for one flush ----------------------------------------------------------


class _Discard(asyncio.Protocol):
    def data_received(self, data: bytes) -> None:
        pass


def sink_entry(host: str, port: int, count: int, ready: Any, stop: Any) -> None:
    """A process holding `count` connections that read and discard everything (the floor's clients)."""
    _raise_nofile()
    _run_loop(_sink(host, port, count, ready, stop))


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
    return _run_loop(_raw_floor(clients, chunk_bytes, passes))


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


# -- (4) relay vs raw publish -------------------------------------------------------------------------


def _synthetic_events(count: int, per_stream: int) -> list[Any]:
    """Requests for `count` Plugin.Restarted-like events (with trace metadata), `per_stream` per stream."""
    from application.ports import AppendRequest, NewEvent
    from infrastructure.eventlog.eventstore import GENESIS

    now = datetime.now(timezone.utc)
    requests = []
    run = uuid.uuid4().hex[:8]
    for s in range(math.ceil(count / per_stream)):
        n = min(per_stream, count - s * per_stream)
        stream_id = f"plugin:relay-{run}-{s:05d}"
        events = []
        for v in range(1, n + 1):
            request_id = uuid.uuid4().hex
            events.append(
                NewEvent(
                    event_id=uuid.uuid4(),
                    stream_id=stream_id,
                    stream_type="plugin",
                    stream_version=v,
                    event_type="Plugin.Restarted",
                    payload={"reason": "bench"},
                    metadata={
                        "actor": "bench-relay",
                        "command": "RestartPlugin",
                        "request_id": request_id,
                        "correlation_id": request_id,
                        "causation_id": request_id,
                        "traceparent": f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
                    },
                    recorded_at=now,
                )
            )
        requests.append(AppendRequest(stream_id=stream_id, expected_version=0, events=events, prev_hash=GENESIS))
    return requests


async def _append_events(dsn: str, count: int) -> tuple[tuple[int, int], float]:
    """Append `count` events in big group-committed batches; returns the cursor before them and seconds."""
    from infrastructure.eventlog.eventstore import EventStore, create_pool

    pool = await create_pool(dsn, min_size=2, max_size=4)
    try:
        row = await pool.fetchrow(
            "SELECT transaction_id::text::bigint AS tx, position FROM events ORDER BY transaction_id DESC, position DESC LIMIT 1"
        )
        cursor = (row["tx"], row["position"]) if row else (0, 0)
        requests = _synthetic_events(count, 100)
        store = EventStore(pool, writers=2, max_batch=50)
        await store.start()
        started = time.perf_counter()
        try:
            await asyncio.gather(*(store.append(r) for r in requests))
        finally:
            await store.stop()
        return cursor, time.perf_counter() - started
    finally:
        await pool.close()


async def _read_events(dsn: str, cursor: tuple[int, int], count: int) -> tuple[list[Any], float]:
    """The outbox rows after `cursor`, read as the relay reads them; returns them and the seconds taken."""
    from infrastructure.eventlog.eventstore import init_connection
    from infrastructure.stream.relay import outbox_rows

    conn = await asyncpg.connect(dsn, statement_cache_size=0)
    await init_connection(conn)
    try:
        rows: list[Any] = []
        started = time.perf_counter()
        while len(rows) < count:
            batch = await outbox_rows(conn, cursor, 1000)
            if not batch:
                break
            rows.extend(batch)
            cursor = (batch[-1][1], batch[-1][0])
        return rows, time.perf_counter() - started
    finally:
        await conn.close()


async def _delete_streams(nats_url: str, names: list[str]) -> None:
    import nats
    from nats.js.errors import NotFoundError

    nc = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=1)
    try:
        js = nc.jetstream()
        for name in names:
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()


async def _raw_publish(
    nats_url: str, stream: Any, rows: list[Any], wait_stall: float | None, batch: int | None, on_progress: Any,
) -> dict[str, Any]:
    """publish_async of every message, awaiting the acks (all at the end, or every `batch` messages). The
    messages (subjects, bodies, headers) are the relay's own, built before the clock starts."""
    import nats

    from infrastructure.stream.relay import Outbox, ensure_stream

    messages = Outbox(stream.prefix).messages(rows, None)
    subjects = [m.subject for m in messages]
    payloads = [m.data for m in messages]
    headers = [m.headers for m in messages]
    nc = await nats.connect(nats_url, connect_timeout=5)
    try:
        js = nc.jetstream(timeout=5.0)
        await ensure_stream(js, stream)
        started = time.perf_counter()
        futures: list[Any] = []
        step = batch or len(subjects)
        for first in range(0, len(subjects), step):
            chunk = []
            for i in range(first, min(first + step, len(subjects))):
                chunk.append(await js.publish_async(subjects[i], payloads[i], headers=headers[i], wait_stall=wait_stall))
            if batch:
                await asyncio.gather(*chunk)
                on_progress(first + len(chunk))
            futures.extend(chunk)
        acks = await asyncio.gather(*futures, return_exceptions=True)
        elapsed = time.perf_counter() - started
        failures = [a for a in acks if isinstance(a, BaseException)]
        on_progress(len(subjects))
        info = await js.stream_info(stream.name)
        return {
            "events": len(subjects),
            "seconds": elapsed,
            "events_per_s": len(subjects) / elapsed,
            "errors": len(failures),
            "first_error": repr(failures[0]) if failures else None,
            "stream_messages": info.state.messages,
        }
    finally:
        await nc.close()


async def _relay_publish(dsn: str, nats_url: str, stream: Any, cursor: tuple[int, int], count: int, on_progress: Any) -> dict[str, Any]:
    """Run a Relay from `cursor` until it has published `count` events; time it, and split the time."""
    from infrastructure.stream.relay import RELAY, Relay

    class TimedRelay(Relay):
        """The production relay, with timestamps around its own steps (bench-side instrumentation only)."""

        ready_at: float | None = None
        publishing = 0.0

        async def _resync(self, conn: Any, js: Any) -> Any:
            found = await super()._resync(conn, js)
            self.ready_at = time.perf_counter()
            return found

        async def _publish(self, js: Any, messages: list[Any]) -> list[Any]:
            started = time.perf_counter()
            try:
                return await super()._publish(js, messages)
            finally:
                self.publishing += time.perf_counter() - started

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING", RELAY)
        await conn.execute(
            "UPDATE checkpoints SET transaction_id = $2::text::xid8, position = $3 WHERE name = $1", RELAY, str(cursor[0]), cursor[1]
        )
    finally:
        await conn.close()
    relay = TimedRelay(dsn, nats_url, stream, asyncio.Event(), batch_size=1000, poll_interval=0.5)
    started = time.perf_counter()
    task = asyncio.create_task(relay.run())
    try:
        deadline = started + 300
        while relay.state.published < count:
            if task.done():
                task.result()
                raise RuntimeError("the relay stopped")
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the relay published {relay.state.published} of {count} events in 300 s")
            on_progress(relay.state.published)
            await asyncio.sleep(0.001)
        finished = time.perf_counter()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await relay.close()
    on_progress(count)
    steady = finished - (relay.ready_at or started)
    return {
        "events": relay.state.published,
        "seconds": steady,
        "events_per_s": relay.state.published / steady,
        "seconds_with_startup": finished - started,
        "startup_seconds": (relay.ready_at or started) - started,
        "publish_seconds": relay.publishing,
        "read_and_checkpoint_seconds": steady - relay.publishing,
        "last_error": relay.state.last_error,
    }


async def _relay_phases(dsn: str, nats_url: str, token: str, count: int, rounds: int, progress: Progress) -> dict[str, Any]:
    from infrastructure.stream.relay import Outbox, StreamSettings

    appending = progress.add_task("(4) append events", total=count, status="")
    cursor, append_seconds = await _append_events(dsn, count)
    progress.update(appending, completed=count, status=f"{count:,} events in {append_seconds:.2f}s ({count / append_seconds:,.0f}/s)")
    rows, read_seconds = await _read_events(dsn, cursor, count)
    if len(rows) != count:
        raise RuntimeError(f"read back {len(rows)} of the {count} appended events")
    started = time.perf_counter()
    messages = Outbox("charter.events").messages(rows, None)
    encode_seconds = time.perf_counter() - started
    variants = {
        "raw": ("raw publish_async loop", None, None),
        "raw_stall": ("raw, wait_stall=5 as the relay", 5.0, None),
        "raw_barrier": ("raw, acks awaited every 1,000", None, 1000),
        "raw_batched": ("raw, wait_stall=5, acks awaited every 1,000", 5.0, 1000),
    }
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in (*variants, "relay")}
    names: list[str] = []
    upper = token.upper()
    try:
        for round_ in range(1, rounds + 1):
            for key, (title, stall, batch) in variants.items():
                stream = StreamSettings(name=f"CHARTER_BENCH_{upper}_{key.upper()}_{round_}", prefix=f"charter_bench_{token}_{key}{round_}.events", max_age_days=1)
                names.append(stream.name)
                task = progress.add_task(f"(4) {key} #{round_}", total=count, status="")
                found = await _raw_publish(nats_url, stream, rows, stall, batch, lambda n, t=task: progress.update(t, completed=n))
                found["title"] = title
                runs[key].append(found)
                progress.update(task, status=f"{found['events_per_s']:,.0f} events/s")
                await _delete_streams(nats_url, [stream.name])
            stream = StreamSettings(name=f"CHARTER_BENCH_{upper}_RELAY_{round_}", prefix=f"charter_bench_{token}_relay{round_}.events", max_age_days=1)
            names.append(stream.name)
            task = progress.add_task(f"(4) relay #{round_}", total=count, status="")
            found = await _relay_publish(dsn, nats_url, stream, cursor, count, lambda n, t=task: progress.update(t, completed=n))
            runs["relay"].append(found)
            progress.update(task, status=f"{found['events_per_s']:,.0f} events/s")
            await _delete_streams(nats_url, [stream.name])
    finally:
        with contextlib.suppress(Exception):
            await _delete_streams(nats_url, names)
    best = {k: max(v, key=lambda r: r["events_per_s"]) for k, v in runs.items() if v}
    ratio = best["relay"]["events_per_s"] / best["raw"]["events_per_s"] if best["raw"]["events_per_s"] else None
    return {
        "events": count,
        "append_seconds": round(append_seconds, 3),
        "append_events_per_s": round(count / append_seconds, 1),
        "read_global_seconds": round(read_seconds, 3),
        "read_global_events_per_s": round(count / read_seconds, 1),
        "encode_seconds": round(encode_seconds, 3),
        "encode_events_per_s": round(count / encode_seconds, 1),
        "payload_bytes_avg": round(sum(len(m.data) for m in messages) / len(messages), 1),
        "header_bytes_avg": round(sum(sum(len(k) + len(v) + 4 for k, v in m.headers.items()) for m in messages) / len(messages), 1),
        "rounds": rounds,
        "runs": runs,
        "best": {k: round(v["events_per_s"], 1) for k, v in best.items()},
        "relay_vs_raw": ratio,
    }


# -- the run and its report ---------------------------------------------------------------------------


@contextlib.contextmanager
def bench_nats(workdir: Path, console: Console) -> Iterator[tuple[str, str, int | None]]:
    """CHARTER_NATS_URL's server, or an embedded nats-server (JetStream) under `workdir`: (url, kind, pid)."""
    given = os.environ.get("CHARTER_NATS_URL")
    if given:
        yield given, "external", None
        return
    from infrastructure.embedded.servers import EmbeddedNats

    server = EmbeddedNats(workdir / "nats")
    console.print(f"starting embedded NATS (JetStream) under {server.store_dir} ...")
    url = server.start()
    try:
        yield url, "embedded", server.pid
    finally:
        server.stop()
        console.print("embedded NATS stopped")


async def _nats_info(url: str) -> dict[str, Any]:
    import nats

    nc = await nats.connect(url, connect_timeout=5)
    try:
        info = nc._server_info  # noqa: SLF001 - the INFO the server sent
        return {"version": info.get("version"), "jetstream": info.get("jetstream"), "max_payload": info.get("max_payload")}
    finally:
        await nc.close()


async def _migrate(dsn: str) -> None:
    from infrastructure.eventlog.migrate import migrate

    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn)
    finally:
        await conn.close()


def auto_client_processes(clients: int) -> int:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if clients < 200:
        return 1
    return max(1, min(4, cpus // 2))


def targets(cfg: FanoutConfig, fan: FanoutResult, relay: dict[str, Any]) -> dict[str, dict[str, Any]]:
    load = fan.load
    p99 = (load.get("latency_ms") or {}).get("p99")
    achieved = load.get("commands", {}).get("rate_achieved", 0.0)
    clean = not load.get("drops") and not load.get("disconnects") and not load.get("missing_deliveries")
    at_target = cfg.clients >= TARGET_CLIENTS and cfg.rate >= TARGET_RATE
    kib = fan.memory.get("kib_per_idle_client")
    ratio = relay.get("relay_vs_raw")
    return {
        "p99_commit_to_client_ms": {
            "title": f"p99 commit-to-client at {TARGET_RATE:g} events/s with {TARGET_CLIENTS:,} clients",
            "value": p99,
            "target": f"<= {P99_TARGET_MS:g} ms",
            "met": p99 is not None and p99 <= P99_TARGET_MS and clean and achieved >= 0.95 * cfg.rate,
            "conditions": f"{load.get('clients', 0):,} clients, {achieved:,.0f} of {cfg.rate:g} events/s requested; "
            f"timed from recorded_at (before the commit); from the writer's acknowledgement p99 "
            f"{(load.get('latency_from_ack_ms') or {}).get('p99', float('nan')):,.1f} ms"
            + ("" if at_target else " (below the target load)")
            + ("" if clean else f"; {load.get('drops', 0)} drops, {load.get('disconnects', 0)} disconnects, {load.get('missing_deliveries', 0)} missing"),
        },
        "kib_per_idle_client": {
            "title": "server memory per idle SSE client",
            "value": kib,
            "target": f"<= {KIB_PER_CLIENT_TARGET:g} KiB",
            "met": kib is not None and kib <= KIB_PER_CLIENT_TARGET,
            "conditions": f"{fan.memory.get('idle_clients', 0):,} idle clients",
        },
        "relay_vs_raw": {
            "title": "relay events/s / raw publish_async loop events/s",
            "value": ratio,
            "target": f">= {RELAY_RATIO_TARGET:g}x",
            "met": ratio is not None and ratio >= RELAY_RATIO_TARGET,
            "conditions": f"{relay.get('events', 0):,} events, best of {relay.get('rounds', 0)}",
        },
    }


def fmt_value(key: str, value: Any) -> str:
    if value is None:
        return "n/a"
    if key == "relay_vs_raw":
        return f"{value:.2f}x"
    if key == "kib_per_idle_client":
        return f"{value:,.1f} KiB"
    return f"{value:,.1f} ms"


def fmt_hub(hub: dict[str, Any] | None) -> str:
    if not hub:
        return "-"
    return (
        f"{hub['flushes']:,} flushes of {hub['events_per_flush']:,.1f} events, {hub['flush_ms_avg']:,.1f} ms each, "
        f"{hub['us_per_write']:,.1f} µs per client write"
    )


def fmt_floor(floor: dict[str, Any] | None) -> str:
    if not floor:
        return "-"
    return (
        f"{floor['us_per_write_wall']:,.1f} µs per write ({floor['us_per_write_cpu']:,.1f} µs CPU) of {floor['chunk_bytes']:,} B; "
        f"{floor['pass_ms_p50']:,.1f} ms per pass over {floor['clients']:,} sockets (p50 of {floor['passes']})"
    )


def fmt_lat(lat: dict[str, float] | None) -> str:
    if not lat:
        return "-"
    parts = [f"p50 {lat['p50']:,.1f}"]
    if "p90" in lat:
        parts.append(f"p90 {lat['p90']:,.1f}")
    parts += [f"p99 {lat['p99']:,.1f}", f"max {lat['max']:,.1f}"]
    return " / ".join(parts)


def results_tables(report: dict[str, Any]) -> list[Table]:
    load, memory, relay = report["fanout"], report["memory"], report["relay"]
    main = Table(title="charter bench fanout", title_justify="left")
    main.add_column("measure")
    main.add_column("value", justify="right")
    cmds = load["commands"]
    main.add_row("commands (RestartPlugin) committed", f"{cmds['rate_achieved']:,.0f}/s of {cmds['rate_requested']:g}/s requested ({cmds['errors']} errors)")
    main.add_row("SSE clients", f"{load['clients']:,} in {load['client_processes']} client process(es) (+1 probe)")
    main.add_row(
        "events committed in the window",
        f"{load['events_committed_in_window']:,} in {load['window_seconds']:.1f}s ({load['events_per_s']:,.0f}/s); "
        f"{load['events_never_delivered']:,} reached no client",
    )
    lag = report["server_process"].get("relay_lag_in_window") or {}
    main.add_row("relay", f"in the {report['config']['relay_in']} process; lag in the window max {lag.get('max')}, last {lag.get('last')} events")
    main.add_row("deliveries", f"{load['deliveries']:,} of {load['expected_deliveries']:,} = {load['deliveries_per_s']:,.0f}/s")
    per = load["per_client_events_per_s"]
    main.add_row("per client events/s", f"mean {per['mean']:,.1f}, min {per['min']:,.1f}, max {per['max']:,.1f}")
    main.add_row("drops / disconnects / gaps / dups", f"{load['drops']} / {load['disconnects']} / {load['gaps']} / {load['duplicates']}")
    main.add_row(
        "events per chunk; CPU per delivery",
        f"{load['events_per_chunk']}; server {load['server_us_per_delivery']} us, clients {load['clients_us_per_delivery']} us",
    )
    main.add_row("commit-to-client ms (all clients)", fmt_lat(load["latency_ms"]))
    main.add_row("  from the writer's acknowledgement, ms", fmt_lat(load.get("latency_from_ack_ms")))
    main.add_row("  first -> last client, per event, ms", fmt_lat(load.get("fanout_spread_ms")))
    hub, floor = load.get("hub"), report.get("floor")
    if hub:
        main.add_row(
            "hub flushes in the window",
            f"{hub['flushes']:,} of {hub['events_per_flush']:,.1f} events, {hub['flush_ms_avg']:,.1f} ms each = "
            f"{hub['us_per_write']:,.1f} µs per client write",
        )
    if floor:
        main.add_row(
            "floor: bare uvloop writes, no load",
            f"{floor['us_per_write_wall']:,.1f} µs per write of {floor['chunk_bytes']:,} B, {floor['pass_ms_p50']:,.1f} ms per "
            f"pass over {floor['clients']:,} sockets",
        )
    stages = load["stages_ms"]
    main.add_row("  command execute (writer) ms", fmt_lat(stages["command_execute"]))
    main.add_row("  recorded_at -> JetStream (probe) ms", fmt_lat(stages["recorded_to_jetstream"]))
    main.add_row("  recorded_at -> 1 SSE client (probe) ms", fmt_lat(stages["recorded_to_probe_sse"]))
    cores = load["cpu_cores"]
    main.add_row("CPU cores in window", ", ".join(f"{k} {v:.2f}" for k, v in cores.items()) + f" (of {report['machine'].get('cpu_count')})")
    idle = memory.get("cpu_cores_while_idle") or {}
    main.add_row("CPU cores, clients idle", ", ".join(f"{k} {v:.2f}" for k, v in idle.items()))
    main.add_row(
        "server RSS",
        f"{(memory.get('server_rss_before_kib') or 0) / 1024:,.1f} MiB -> {(memory.get('server_rss_idle_clients_kib') or 0) / 1024:,.1f} MiB "
        f"with {memory.get('idle_clients', 0):,} idle clients; after load {(memory.get('server_rss_after_load_kib') or 0) / 1024:,.1f} MiB",
    )
    for key, title in (
        ("raw", "raw publish_async"), ("raw_stall", "raw, wait_stall=5"), ("raw_barrier", "raw, acks per 1,000"),
        ("raw_batched", "raw, stall + acks per 1,000"), ("relay", "Relay"),
    ):
        if key in relay["best"]:
            main.add_row(f"relay phase: {title}", f"{relay['best'][key]:,.0f} events/s")
    goals = Table(title="targets", title_justify="left")
    goals.add_column("target")
    goals.add_column("value", justify="right")
    goals.add_column("goal", justify="right")
    goals.add_column("")
    goals.add_column("conditions")
    for key, item in report["targets"].items():
        goals.add_row(item["title"], fmt_value(key, item["value"]), item["target"], "[green]met[/green]" if item["met"] else "[red]not met[/red]", item["conditions"])
    return [main, goals]


def markdown(report: dict[str, Any]) -> str:
    cfg, load, memory, relay = report["config"], report["fanout"], report["memory"], report["relay"]
    cmds, stages, per = load["commands"], load["stages_ms"], load["per_client_events_per_s"]
    lag = report["server_process"].get("relay_lag_in_window") or {}
    lines = [
        f"# charter bench fanout — {report['started_at']}",
        "",
        f"One Charter server process (uvicorn, {report['server_process'].get('http_impl', '?')}), {load['clients']:,} SSE clients in "
        f"{load['client_processes']} client process(es) plus one probe client, RestartPlugin commands from a separate writer "
        f"process at {cfg['rate']:g}/s for {cfg['warmup']:g} s warm-up + {cfg['seconds']:g} s measured; PostgreSQL "
        f"{report['servers']['postgres']['kind']}, NATS {report['servers']['nats']['kind']}.",
        "",
        "## Targets",
        "",
        "| target | value | goal | | conditions |",
        "|---|---:|---:|---|---|",
    ]
    for key, item in report["targets"].items():
        lines.append(f"| {item['title']} | {fmt_value(key, item['value'])} | {item['target']} | {'met' if item['met'] else 'NOT met'} | {item['conditions']} |")
    lines += [
        "",
        "## Fan-out under load",
        "",
        "| measure | value |",
        "|---|---:|",
        f"| commands committed (warm-up + window) | {cmds['completed']:,} ({cmds['rate_achieved']:,.0f}/s of {cmds['rate_requested']:g}/s; {cmds['errors']} errors, {cmds['busy_skips']} skipped) |",
        f"| events committed in the measured window | {load['events_committed_in_window']:,} ({load['events_per_s']:,.0f}/s) |",
        f"| … of which reached no client by the end of the drain | {load['events_never_delivered']:,} |",
        f"| relay | in the {cfg['relay_in']} process; lag during the window max {lag.get('max')}, last {lag.get('last')} events |",
        f"| deliveries (all clients) | {load['deliveries']:,} of {load['expected_deliveries']:,} ({load['deliveries_per_s']:,.0f}/s) |",
        f"| events/s per client | mean {per['mean']:,.1f}, min {per['min']:,.1f}, p50 {per['p50']:,.1f}, max {per['max']:,.1f} |",
        f"| drops / disconnects / gaps / duplicates | {load['drops']} / {load['disconnects']} / {load['gaps']} / {load['duplicates']} |",
        f"| events per chunk (batching of the hub's flushes, as received) | {load['events_per_chunk']} |",
        f"| CPU per delivery: server / clients (µs) | {load['server_us_per_delivery']} / {load['clients_us_per_delivery']} |",
        f"| commit-to-client latency, all clients (ms) | {fmt_lat(load['latency_ms'])} |",
        f"| — the same, timed from when the writer had the command's result (ms) | {fmt_lat(load.get('latency_from_ack_ms'))} |",
        f"| — one event from its first to its last client (the time one flush takes, ms) | {fmt_lat(load.get('fanout_spread_ms'))} |",
        f"| — command execute in the writer (ms) | {fmt_lat(stages['command_execute'])} |",
        f"| — recorded_at → JetStream, core-NATS probe (ms) | {fmt_lat(stages['recorded_to_jetstream'])} |",
        f"| — recorded_at → one SSE client in a quiet process (ms) | {fmt_lat(stages['recorded_to_probe_sse'])} |",
        f"| CPU cores in the window | {', '.join(f'{k} {v:.2f}' for k, v in load['cpu_cores'].items())} (machine has {report['machine'].get('cpu_count')}) |",
        f"| client side saturated (a client process ≥ 0.9 core) | {load['client_side_saturated']} |",
        f"| server process saturated (≥ 0.9 core) | {load['server_saturated']} |",
        f"| hub flushes in the window (from /metrics) | {fmt_hub(load.get('hub'))} |",
        f"| floor: bare uvloop server, same chunk to as many sockets, nothing else running | {fmt_floor(report.get('floor'))} |",
        "",
        "Latency = client receive time (`time.time()` when the bytes were read) − the event's `recorded_at`, on one "
        "machine clock. `recorded_at` is the domain event's timestamp, taken in the writer process when the command "
        "handler triggers the event — after the plugin's stream was loaded, before the append is queued for the "
        "group commit — so these numbers include the commit itself (see the command execute line), i.e. they slightly "
        "overstate commit-to-client. Only events recorded inside the measured window count; their deliveries are "
        "waited for after the window closes.",
        "",
        "## Memory",
        "",
        f"- server RSS before clients (after 10 warm-up SSE connections were opened and closed, and the probe connected): {memory.get('server_rss_before_kib'):,} KiB",
        f"- with {memory.get('idle_clients', 0):,} idle clients after {memory.get('idle_seconds')} s: {memory.get('server_rss_idle_clients_kib'):,} KiB "
        f"(+{memory.get('delta_kib'):,} KiB = **{memory.get('kib_per_idle_client')} KiB per client**); connecting took {memory.get('connect_seconds')} s",
        f"- marginal cost between {memory['steps'][0]['clients']:,} and {memory['steps'][-1]['clients']:,} idle clients: "
        f"{memory.get('kib_per_idle_client_marginal')} KiB per client (RSS = median of 5 samples at each step: {[st['rss_kib'] for st in memory['steps']]} KiB)",
        f"- after the load: {memory.get('server_rss_after_load_kib')} KiB (peak {memory.get('server_rss_peak_kib')} KiB; the peak "
        "includes start-up, e.g. argon2's 64 MiB working memory for the dummy password hash)",
        f"- CPU cores while the clients were idle: {memory.get('cpu_cores_while_idle')}",
        "- every client presents its own access token (role auditor, everywhere), so the server's token cache holds "
        "one entry per client, as it would in production",
        "",
        "## Relay vs raw JetStream publish",
        "",
        f"{relay['events']:,} events appended in big batches ({relay['append_events_per_s']:,.0f} events/s), then published to "
        f"fresh streams of the same NATS server, best of {relay['rounds']} rounds. Payload {relay['payload_bytes_avg']:.0f} B, "
        f"headers ~{relay['header_bytes_avg']:.0f} B per message (Nats-Msg-Id, expected-last-msg-id chain, traceparent, Charter-*).",
        "",
        "| publisher | events/s | runs (events/s) |",
        "|---|---:|---|",
    ]
    titles = {
        "raw": "raw `publish_async` loop, acks awaited at the end (baseline)",
        "raw_stall": "raw, `wait_stall=5` as the relay passes",
        "raw_barrier": "raw, acks awaited every 1,000 (the relay's batch barrier), no `wait_stall`",
        "raw_batched": "raw, `wait_stall=5`, acks awaited every 1,000 (the relay's batch barrier)",
        "relay": "Relay (reads and publishes batches of 1,000 while earlier ones wait for acks; checkpoint after acks)",
    }
    for key, title in titles.items():
        runs = relay["runs"].get(key) or []
        each = ", ".join(f"{r['events_per_s']:,.0f}" for r in runs)
        lines.append(f"| {title} | {relay['best'].get(key, 0):,.0f} | {each} |")
    best_relay = max(relay["runs"]["relay"], key=lambda r: r["events_per_s"])
    lines += [
        "",
        f"Relay time split (best run): {best_relay['seconds']:.3f} s steady, of which {best_relay['publish_seconds']:.3f} s in `_publish` "
        f"(publish_async calls) and {best_relay['read_and_checkpoint_seconds']:.3f} s reading the log or waiting for acks; "
        f"startup (connect, lock, stream, resync) {best_relay['startup_seconds']:.3f} s, not counted. In isolation: read_global "
        f"{relay['read_global_events_per_s']:,.0f} events/s, envelope+headers encoding {relay['encode_events_per_s']:,.0f} events/s.",
        "",
    ]
    if report.get("analysis"):
        lines += ["## Analysis", "", *report["analysis"], ""]
    lines += ["## Machine", ""]
    lines += [f"- {k}: {v}" for k, v in report["machine"].items()]
    lines += ["", "## Servers", ""]
    pg = report["servers"]["postgres"]
    lines += [f"- PostgreSQL ({pg['kind']}): {pg.get('version_full') or pg.get('version')}"]
    nats_info = report["servers"]["nats"]
    lines += [f"- NATS ({nats_info['kind']}): {nats_info.get('version')}"]
    lines += [f"- Charter server settings: {report['server_process'].get('settings')}"]
    lines += ["", "## Run", ""]
    lines += [f"- {k}: {v}" for k, v in cfg.items()]
    if report.get("profile_top"):
        lines += ["", "## Server profile (cProfile, measured window)", "", "```", report["profile_top"].strip(), "```"]
    return "\n".join(lines) + "\n"




def analysis(report: dict[str, Any]) -> list[str]:
    """Plain statements read off the numbers (where time and memory go), for the report."""
    load, relay, cfg = report["fanout"], report["relay"], report["config"]
    notes = []
    lag = report["server_process"].get("relay_lag_in_window") or {}
    committed = load.get("events_committed_in_window") or 0
    if committed and (load.get("events_never_delivered", 0) > 0.05 * committed or (lag.get("max") or 0) > cfg["rate"]):
        notes.append(
            f"- The relay fell behind: {load['events_never_delivered']:,} of {committed:,} events committed in the window reached "
            f"no client by the end of the drain; relay lag peaked at {lag.get('max')} events (relay in the {cfg['relay_in']} process)."
        )
    stages = load["stages_ms"]
    js, probe, all_ = stages.get("recorded_to_jetstream"), stages.get("recorded_to_probe_sse"), load.get("latency_ms")
    if js and probe and all_:
        notes.append(
            f"- p99 by stage: JetStream {js['p99']:,.1f} ms, one quiet SSE client {probe['p99']:,.1f} ms, all clients {all_['p99']:,.1f} ms: "
            f"relay ≈ {js['p99']:,.1f} ms, hub + SSE for one client ≈ {probe['p99'] - js['p99']:,.1f} ms, the rest "
            f"({all_['p99'] - probe['p99']:,.1f} ms) is the cost of serving {load['clients']:,} clients (server and client CPU)."
        )
    cores = load["cpu_cores"]
    if load.get("server_us_per_chunk"):
        per_chunk = load["server_us_per_chunk"]
        cycle_ms = per_chunk * load["clients"] / 1000
        notes.append(
            f"- The server spends ≈ {per_chunk:,.0f} µs of CPU per chunk written to one client ({load.get('events_per_chunk')} events per "
            f"chunk), so one hub flush to {load['clients']:,} clients costs ≈ {cycle_ms:,.0f} ms of event-loop time: the last client of "
            "a flush gets it that much later than the first, and the relay (same loop) waits behind it."
        )
    floor, hub = report.get("floor"), load.get("hub")
    if floor and hub:
        notes.append(
            f"- Floor: a bare uvloop server writing one {floor['chunk_bytes']:,}-byte chunk to each of {floor['clients']:,} sockets "
            f"takes {floor['us_per_write_wall']:,.1f} µs per write ({floor['pass_ms_p50']:,.1f} ms per pass) on this machine with "
            f"nothing else running; Charter's hub took {hub['us_per_write']:,.1f} µs per write in the window "
            f"({hub['flush_ms_avg']:,.1f} ms per flush of {hub['events_per_flush']:,.1f} events, with the load running)."
        )
    if load.get("server_saturated"):
        notes.append(f"- The server process used {cores.get('server', 0):.2f} cores: its one event loop is saturated.")
    if load.get("client_side_saturated"):
        notes.append("- A client process used ≥ 0.9 core: client-side queueing is part of the measured latency.")
    machine = cores.get("machine")
    cpus = report["machine"].get("cpu_count") or 0
    if machine is not None and cpus and machine >= 0.9 * cpus:
        notes.append(
            f"- The machine was busy {machine:.2f} of {cpus} cores (other processes: {cores.get('other', 0):.2f}): server, clients, "
            "writer, PostgreSQL and NATS compete for CPU."
        )
    server = report["server_process"]
    if server.get("exit_code") == -signal.SIGKILL:
        notes.append(
            f"- The server did not stop within 15 s of SIGTERM and was killed (shutdown {server.get('shutdown_seconds')} s); "
            "its asyncio tasks at that moment are in server_process.log_tail of the JSON report."
        )
    best = relay.get("best", {})
    if best.get("raw") and best.get("relay"):
        notes.append(
            f"- Relay {best['relay']:,.0f} events/s vs raw {best['raw']:,.0f}; raw with wait_stall=5 {best.get('raw_stall', 0):,.0f}; "
            f"raw with the per-1,000 ack barrier {best.get('raw_barrier', 0):,.0f}, with both {best.get('raw_batched', 0):,.0f}. "
            "wait_stall costs a Task and a loop iteration per message (asyncio.wait_for on Python 3.11)."
        )
    return notes


def run_fanout(args: argparse.Namespace) -> int:
    clients = max(1, int(getattr(args, "sse_clients", TARGET_CLIENTS) or TARGET_CLIENTS))
    rate = max(1.0, float(getattr(args, "rate", TARGET_RATE) or TARGET_RATE))
    seconds = max(1.0, float(getattr(args, "seconds", None) or 20.0))
    relay_events = max(1000, int(getattr(args, "relay_events", 20_000) or 20_000))
    relay_rounds = max(1, int(getattr(args, "relay_rounds", 2) or 2))
    processes = int(getattr(args, "client_processes", 0) or 0) or auto_client_processes(clients)
    processes = max(1, min(processes, clients))
    folder = Path(getattr(args, "report", None) or "bench-reports")
    profile = getattr(args, "profile_server", None) or os.environ.get(PROFILE_ENV)
    cfg = FanoutConfig(
        clients=clients,
        rate=rate,
        seconds=seconds,
        warmup=min(3.0, max(1.0, seconds / 5)),
        idle_seconds=float(getattr(args, "idle_seconds", None) or (5.0 if clients >= 200 else 1.0)),
        client_processes=processes,
        plugins=max(64, min(5000, int(rate * 2))),
        server_projectors=bool(getattr(args, "server_projectors", False)),
        relay_in=str(getattr(args, "relay_in", None) or "server"),
        profile=Path(profile).absolute() if profile else None,
    )
    console = Console()
    load_at_start = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    from infrastructure.telemetry.logging import configure_logging

    configure_logging("warning", json=False)
    started_at = datetime.now(timezone.utc)
    token = uuid.uuid4().hex[:12]
    database = f"charter_bench_{token}"
    from infrastructure.stream.relay import StreamSettings

    stream = StreamSettings(name=f"CHARTER_BENCH_{token.upper()}", prefix=f"charter_bench_{token}.events", max_age_days=1)
    _raise_nofile()
    with tempfile.TemporaryDirectory(prefix="charter-bench-fanout-") as tmp:
        workdir = Path(tmp)
        with bench_server(workdir, console) as pg, bench_nats(workdir, console) as (nats_url, nats_kind, nats_pid):
            asyncio.run(create_database(pg.admin_dsn, database))
            dsn = with_database(pg.admin_dsn, database)
            try:
                asyncio.run(_migrate(dsn))
                pg_info = asyncio.run(server_info(dsn))
                nats_info = asyncio.run(_nats_info(nats_url))
                console.print(
                    f"database {database} on PostgreSQL {pg_info['version']} ({pg.kind}); NATS {nats_info.get('version')} ({nats_kind}), "
                    f"stream {stream.name}; {clients:,} SSE clients in {processes} process(es), {rate:g} events/s for "
                    f"{cfg.warmup:g}s warm-up + {seconds:g}s; relay phase {relay_events:,} events x {relay_rounds} rounds"
                )
                with bench_progress(28) as progress:
                    fan = run_fanout_phases(dsn, nats_url, stream, cfg, workdir, progress, nats_pid)
                    flooring = progress.add_task("(5) floor: bare socket writes", total=None, status="")
                    floor = raw_floor(cfg.clients, int(fan.load.get("bytes_per_chunk") or 25_000))
                    progress.update(
                        flooring, total=1, completed=1,
                        status=f"{floor['us_per_write_wall']:,.1f} µs per write, {floor['pass_ms_p50']:,.1f} ms per pass",
                    )
                    relay = _run_loop(_relay_phases(dsn, nats_url, token, relay_events, relay_rounds, progress))
            finally:
                with contextlib.suppress(Exception):
                    asyncio.run(_delete_streams(nats_url, [stream.name]))
                asyncio.run(drop_database(pg.admin_dsn, database))

    report: dict[str, Any] = {
        "suite": "fanout",
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "sse_clients": clients,
            "client_processes": processes,
            "rate": rate,
            "seconds": seconds,
            "warmup": cfg.warmup,
            "idle_seconds": cfg.idle_seconds,
            "plugins": cfg.plugins,
            "server_projectors": cfg.server_projectors,
            "relay_in": cfg.relay_in,
            "relay_events": relay_events,
            "relay_rounds": relay_rounds,
            "database": database,
            "stream": stream.name,
            "profile": str(cfg.profile) if cfg.profile else None,
            "loadavg_at_start": load_at_start,
        },
        "machine": machine_info(),
        "servers": {"postgres": {"kind": pg.kind, **pg_info}, "nats": {"kind": nats_kind, **nats_info}},
        "server_process": fan.server,
        "memory": fan.memory,
        "fanout": fan.load,
        "floor": floor,
        "relay": relay,
        "targets": {},
        "notes": [
            "recorded_at is the domain event's timestamp, taken in the writer just before the append is queued for "
            "the group commit; latencies include the commit.",
            "All processes (server, clients, writer, PostgreSQL, NATS) share one machine.",
        ],
    }
    report["targets"] = targets(cfg, fan, relay)
    report["analysis"] = analysis(report)
    if fan.profile_top:
        report["profile_top"] = fan.profile_top
    json_path, md_path = write_report(folder, "fanout", report, markdown)
    for table in results_tables(report):
        console.print(table)
    for line in report["analysis"]:
        console.print(line)
    if fan.server.get("exit_code") not in (0, None, -signal.SIGTERM):  # uvicorn re-raises SIGTERM when done
        console.print(f"[yellow]server exited with {fan.server.get('exit_code')}; log tail:\n{fan.server.get('log_tail')}[/yellow]")
    console.print(f"report: {json_path}  {md_path}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        serve()
    else:
        print("usage: python -m ops.bench.fanout serve   (use `charter bench fanout` to run the benchmark)", file=sys.stderr)
        sys.exit(2)
