"""The SSE clients of `charter bench fanout` (in client processes of their own): raw asyncio protocols
speaking a minimal HTTP/1.1, receipts kept per read, latencies worked out after the run."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
import uuid
from array import array
from dataclasses import dataclass
from typing import Any

from ops.bench.common import raise_nofile, run_loop
from ops.bench.fanout.latency import (
    HIST_BUCKETS,
    HIST_RESOLUTION,
    Acks,
    new_histogram,
    position_of,
    recorded_epoch,
    sparse,
)

SSE_PATH = "/api/v1/events/stream"


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
    raise_nofile()
    try:
        run_loop(
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
